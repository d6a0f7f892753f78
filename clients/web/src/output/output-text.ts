/**
 * Makes program output safe and legible as text. Output is arbitrary bytes: it is decoded as UTF-8
 * with U+FFFD for invalid sequences (see StreamBuffer), then every character that would be
 * invisible, move the cursor or reorder text is replaced by a visible escape such as \x1b or \u202e,
 * marked as escaped.
 * Newlines and tabs stay as they are; "\r\n" counts as a newline. The CLI draws output on a terminal
 * by the same rules (clients/python/src/evalmesh/cli/terminal.py): change the two together.
 */

/** Segment is a run of output text; escaped runs are stand-ins for characters that were not shown. */
export interface Segment {
  text: string;
  escaped: boolean;
  /** title says, for an escaped run, what the original characters were. */
  title?: string;
}

// C0 controls except \t and \n, DEL, C1 controls, bidi and invisible formatting characters, line and
// paragraph separators, the BOM, and U+FFFD (what the decoder put in place of bytes that are not UTF-8).
const SPECIAL =
  // eslint-disable-next-line no-control-regex
  /\r\n|[\u0000-\u0008\u000b-\u001f\u007f-\u009f\u061c\u200b\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069\ufeff\ufffd]+/g;

function hex(code: number): string {
  return code <= 0xff ? `\\x${code.toString(16).padStart(2, "0")}` : `\\u${code.toString(16).padStart(4, "0")}`;
}

// Stand-ins are plain ASCII escapes (every monospace font has them) except U+FFFD, which marks
// bytes that were not UTF-8 and is kept as the decoder's own mark.
function standIn(char: string): string {
  if (char === "\r") return "\\r";
  if (char === "\ufffd") return char;
  return hex(char.charCodeAt(0));
}

function describe(run: string): string {
  if (/^\ufffd+$/.test(run)) return `${run.length} invalid UTF-8 byte sequence${run.length === 1 ? "" : "s"}`;
  return Array.from(run, (char) => hex(char.charCodeAt(0))).join(" ");
}

/** escapeOutput splits decoded output into plain runs and visible stand-ins for special characters. */
export function escapeOutput(text: string): Segment[] {
  const segments: Segment[] = [];
  let plain = "";
  let last = 0;
  for (const match of text.matchAll(SPECIAL)) {
    const run = match[0];
    plain += text.slice(last, match.index);
    last = match.index + run.length;
    if (run === "\r\n") {
      plain += "\n";
      continue;
    }
    if (plain) segments.push({ text: plain, escaped: false });
    plain = "";
    segments.push({ text: Array.from(run, standIn).join(""), escaped: true, title: describe(run) });
  }
  plain += text.slice(last);
  if (plain) segments.push({ text: plain, escaped: false });
  return segments;
}
