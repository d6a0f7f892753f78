import { useLayoutEffect, useMemo, useRef } from "react";

import { formatBytes } from "../format";
import { escapeOutput } from "./output-text";

/** Past this many characters only the start and the end are drawn; the download has everything. */
const MAX_DRAWN = 512 * 1024;

export interface OutputViewProps {
  /** name is the stream's name, "stdout" or "stderr". */
  name: string;
  /** label is the accessible name of the pane. */
  label: string;
  text: string;
  /** byteCount is how many bytes were received. */
  byteCount: number;
  /** truncated is true when the program wrote more than its cap and the rest was dropped. */
  truncated: boolean;
  /** limit is the enforced per-stream cap in bytes, when known. */
  limit?: bigint;
  /** ended is true once no more output can come. */
  ended: boolean;
  onDownload?: () => void;
}

/** cutAt moves ``index`` back off the middle of a character (a UTF-16 surrogate pair) or of "\r\n". */
function cutAt(text: string, index: number): number {
  const before = text.charCodeAt(index - 1);
  const after = text.charCodeAt(index);
  const inPair = before >= 0xd800 && before <= 0xdbff && after >= 0xdc00 && after <= 0xdfff;
  return inPair || (before === 0x0d && after === 0x0a) ? index - 1 : index;
}

function drawnText(text: string): { head: string; hidden: number; tail: string } {
  if (text.length <= MAX_DRAWN) return { head: text, hidden: 0, tail: "" };
  const half = MAX_DRAWN / 2;
  const head = text.slice(0, cutAt(text, half));
  const tail = text.slice(cutAt(text, text.length - half));
  return { head, hidden: text.length - head.length - tail.length, tail };
}

function Segments({ text }: { text: string }) {
  const segments = useMemo(() => escapeOutput(text), [text]);
  return (
    <>
      {segments.map((segment, index) =>
        segment.escaped ? (
          <span key={index} className="escaped" title={segment.title}>
            {segment.text}
          </span>
        ) : (
          segment.text
        ),
      )}
    </>
  );
}

/** OutputView shows one output stream safely, follows its end while it grows, and marks truncation. */
export function OutputView({ name, label, text, byteCount, truncated, limit, ended, onDownload }: OutputViewProps) {
  const pane = useRef<HTMLPreElement>(null);
  const following = useRef(true);
  const drawn = drawnText(text);

  useLayoutEffect(() => {
    const element = pane.current;
    if (element && following.current) element.scrollTop = element.scrollHeight;
  }, [text]);

  const onScroll = () => {
    const element = pane.current;
    if (element) following.current = element.scrollHeight - element.scrollTop - element.clientHeight < 24;
  };

  return (
    <section className={`output output-${name}`} aria-label={label}>
      <header className="output-header">
        <h3>{name}</h3>
        <span className="muted" data-testid={`${name}-bytes`}>
          {formatBytes(byteCount)}
        </span>
        {onDownload && byteCount > 0 ? (
          <button type="button" className="link-button" onClick={onDownload}>
            Download
          </button>
        ) : null}
      </header>
      <pre ref={pane} className="output-text" tabIndex={0} onScroll={onScroll} data-testid={`${name}-text`}>
        {text ? (
          <>
            <Segments text={drawn.head} />
            {drawn.hidden > 0 ? (
              <span className="output-marker">{`\n… ${drawn.hidden.toLocaleString()} characters not drawn here; download to see them …\n`}</span>
            ) : null}
            {drawn.tail ? <Segments text={drawn.tail} /> : null}
          </>
        ) : (
          <span className="muted">{ended ? "(no output)" : "(no output yet)"}</span>
        )}
        {truncated ? (
          <span className="output-marker" data-testid={`${name}-truncated`}>
            {`\n[truncated: the program wrote more than ${limit ? formatBytes(limit) : "its cap"}; the rest was dropped]`}
          </span>
        ) : null}
      </pre>
    </section>
  );
}
