/**
 * Follows one evaluation through WatchEvaluation until its terminal snapshot, across dropped
 * connections: every (re)connect asks for output from the offsets already held, so nothing is
 * shown twice or skipped. Retries back off exponentially and reset once events flow again; errors
 * that retrying cannot fix (not found, no permission, bad key) end the watch.
 *
 * The stream ends by itself once the evaluation is terminal. For one that had already ended when the
 * watch began, the terminal snapshot comes first and the stored output after it, so the watch
 * reads on to the end of the stream rather than stopping at the terminal snapshot.
 *
 * Output belongs to one attempt: when a platform fault makes the evaluation run again, a snapshot
 * with a higher attempt comes first and the new attempt's output starts again at offset 0. The held
 * output is then dropped; if the new attempt shows up at the start of a resumed stream (which asked
 * for the old attempt's offsets), the watch reconnects from 0.
 */
import { Code } from "@connectrpc/connect";
import type { Evaluation, OutputChunk } from "@evalmesh/proto/evalmesh/v1/evaluation_pb";

import { isAbort, toProblem, type EvaluationClient, type RpcProblem } from "../api";
import { isTerminal } from "../format";
import type { AppendResult } from "../output";

export type Connection =
  | { kind: "connecting" }
  | { kind: "live" }
  | { kind: "retrying"; retry: number; delayMs: number; problem?: RpcProblem }
  | { kind: "ended" }
  | { kind: "failed"; problem: RpcProblem };

/** Held says which attempt the held output belongs to and how many bytes of each stream are held. */
export interface Held {
  attempt: number;
  stdout: number;
  stderr: number;
}

/** WatchSink receives what the watch learns and says where to resume. */
export interface WatchSink {
  held(): Held;
  /** newAttempt drops the held output: attempt ``attempt`` writes its own from offset 0. */
  newAttempt(attempt: number): void;
  evaluation(evaluation: Evaluation): void;
  output(chunk: OutputChunk): AppendResult;
  connection(connection: Connection): void;
}

export interface FollowOptions {
  /** delayMs gives the wait before retry number ``retry`` (1, 2, ...). */
  delayMs?: (retry: number) => number;
}

const FATAL = new Set([Code.NotFound, Code.PermissionDenied, Code.Unauthenticated, Code.InvalidArgument]);

export function defaultDelay(retry: number): number {
  return Math.min(10_000, 250 * 2 ** (retry - 1));
}

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(done, ms);
    signal.addEventListener("abort", done, { once: true });
    function done() {
      clearTimeout(timer);
      signal.removeEventListener("abort", done);
      resolve();
    }
  });
}

type Outcome =
  | { kind: "terminal" }
  | { kind: "dropped"; problem?: RpcProblem; progressed: boolean; now?: boolean }
  | { kind: "fatal"; problem: RpcProblem };

async function watchOnce(
  client: Pick<EvaluationClient, "watchEvaluation">,
  id: string,
  sink: WatchSink,
  signal: AbortSignal,
): Promise<Outcome> {
  const { stdout, stderr } = sink.held();
  const call = new AbortController();
  const stop = () => call.abort();
  signal.addEventListener("abort", stop, { once: true });
  let progressed = false;
  let first = true;
  let terminal = false;
  try {
    const request = { id, stdoutOffset: BigInt(stdout), stderrOffset: BigInt(stderr) };
    for await (const response of client.watchEvaluation(request, { signal: call.signal })) {
      if (!progressed) sink.connection({ kind: "live" });
      progressed = true;
      const event = response.event;
      if (event.case === "evaluation") {
        const held = sink.held();
        if (event.value.attempt > held.attempt) {
          sink.newAttempt(event.value.attempt);
          // This stream resumes the old attempt's offsets: ask again from 0.
          if (first && stdout + stderr > 0) return { kind: "dropped", progressed, now: true };
        }
        first = false;
        sink.evaluation(event.value);
        terminal = isTerminal(event.value.state);
      } else if (event.case === "output" && sink.output(event.value) === "gap") {
        return { kind: "dropped", progressed }; // reconnect from the bytes actually held
      }
    }
    return terminal ? { kind: "terminal" } : { kind: "dropped", progressed };
  } catch (error) {
    if (signal.aborted || isAbort(error)) return { kind: "dropped", progressed };
    const problem = toProblem(error);
    return FATAL.has(problem.code) ? { kind: "fatal", problem } : { kind: "dropped", problem, progressed };
  } finally {
    signal.removeEventListener("abort", stop);
    call.abort();
  }
}

/** followEvaluation watches ``id`` until it is terminal, a fatal error, or ``signal`` aborts. */
export async function followEvaluation(
  client: Pick<EvaluationClient, "watchEvaluation">,
  id: string,
  sink: WatchSink,
  signal: AbortSignal,
  options: FollowOptions = {},
): Promise<void> {
  const delayMs = options.delayMs ?? defaultDelay;
  let retry = 0;
  sink.connection({ kind: "connecting" });
  const aborted = () => signal.aborted; // read afresh after each await
  while (!aborted()) {
    const outcome = await watchOnce(client, id, sink, signal);
    if (aborted()) return;
    if (outcome.kind === "terminal") {
      sink.connection({ kind: "ended" });
      return;
    }
    if (outcome.kind === "fatal") {
      sink.connection({ kind: "failed", problem: outcome.problem });
      return;
    }
    if (outcome.now) continue;
    retry = outcome.progressed ? 1 : retry + 1;
    const delay = delayMs(retry);
    sink.connection({ kind: "retrying", retry, delayMs: delay, problem: outcome.problem });
    await sleep(delay, signal);
  }
}
