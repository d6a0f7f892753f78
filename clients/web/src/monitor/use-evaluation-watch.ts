import { OutputStream, type Evaluation } from "@evalmesh/proto/evalmesh/v1/evaluation_pb";
import { useEffect, useState } from "react";

import { evaluations } from "../api";
import { loadOutput, saveOutput, StreamBuffer } from "../output";
import { followEvaluation, type Connection, type WatchSink } from "./follow-evaluation";

/** How often received output is drawn, and how often it is saved for a reload. */
const DRAW_MS = 50;
const SAVE_MS = 1000;

export interface WatchedEvaluation {
  evaluation?: Evaluation;
  connection: Connection;
  stdout: StreamBuffer;
  stderr: StreamBuffer;
  /** resumedBytes is how much output came from this tab's cache instead of the server. */
  resumedBytes: number;
  /** revision changes whenever output arrives, for memoising on it. */
  revision: number;
}

/** Feed is the output held for one evaluation: the attempt that wrote it and both streams. */
interface Feed {
  id: string;
  attempt: number;
  stdout: StreamBuffer;
  stderr: StreamBuffer;
  resumedBytes: number;
}

function openFeed(id: string): Feed {
  const feed: Feed = { id, attempt: 0, stdout: new StreamBuffer(), stderr: new StreamBuffer(), resumedBytes: 0 };
  const cached = loadOutput(id);
  if (cached) {
    feed.attempt = cached.attempt;
    feed.stdout.append(0, cached.stdout);
    feed.stderr.append(0, cached.stderr);
    feed.resumedBytes = feed.stdout.length + feed.stderr.length;
  }
  return feed;
}

/**
 * useEvaluationWatch follows evaluation ``id`` live: its snapshots, its output and the state of the
 * connection. Output already received survives a reload (sessionStorage), and the watch resumes
 * from those offsets.
 */
export function useEvaluationWatch(id: string): WatchedEvaluation {
  const [feed, setFeed] = useState<Feed>(() => openFeed(id));
  const [evaluation, setEvaluation] = useState<Evaluation>();
  const [connection, setConnection] = useState<Connection>({ kind: "connecting" });
  const [revision, setRevision] = useState(0);

  if (feed.id !== id) {
    setFeed(openFeed(id));
    setEvaluation(undefined);
    setConnection({ kind: "connecting" });
  }

  useEffect(() => {
    if (feed.id !== id) return undefined;
    const controller = new AbortController();
    let drawTimer: ReturnType<typeof setTimeout> | undefined;
    let lastSave = 0;
    let latest: Evaluation | undefined;
    const save = () => {
      lastSave = Date.now();
      saveOutput(id, { attempt: feed.attempt, stdout: feed.stdout.bytes(), stderr: feed.stderr.bytes() });
    };
    const draw = () => {
      drawTimer = undefined;
      setRevision((value) => value + 1);
      if (Date.now() - lastSave > SAVE_MS) save();
    };
    const sink: WatchSink = {
      held: () => ({ attempt: feed.attempt, stdout: feed.stdout.length, stderr: feed.stderr.length }),
      newAttempt: (attempt) => {
        feed.attempt = attempt;
        if (feed.stdout.length + feed.stderr.length > 0) {
          feed.stdout = new StreamBuffer();
          feed.stderr = new StreamBuffer();
          feed.resumedBytes = 0;
          setRevision((value) => value + 1);
        }
      },
      evaluation: (value) => {
        latest = value;
        setEvaluation(value);
      },
      output: (chunk) => {
        const buffer = chunk.stream === OutputStream.STDERR ? feed.stderr : feed.stdout;
        const result = buffer.append(Number(chunk.offset), chunk.data);
        if (result === "appended" && drawTimer === undefined) drawTimer = setTimeout(draw, DRAW_MS);
        return result;
      },
      connection: (value) => {
        if (value.kind === "ended") {
          // The stream is over: nothing can complete a character cut off at the very end.
          feed.stdout.finish(latest?.result?.stdoutTruncated ?? false);
          feed.stderr.finish(latest?.result?.stderrTruncated ?? false);
          save();
          setRevision((current) => current + 1);
        }
        setConnection(value);
      },
    };
    window.addEventListener("pagehide", save);
    void followEvaluation(evaluations, id, sink, controller.signal);
    return () => {
      controller.abort();
      window.removeEventListener("pagehide", save);
      if (drawTimer !== undefined) clearTimeout(drawTimer);
      save();
    };
  }, [feed, id]);

  return {
    evaluation,
    connection,
    stdout: feed.stdout,
    stderr: feed.stderr,
    resumedBytes: feed.resumedBytes,
    revision,
  };
}
