// @vitest-environment jsdom
import { create } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import {
  EvaluationSchema,
  Evaluation_State as State,
  OutputChunkSchema,
  OutputStream,
  type OutputChunk,
} from "@evalmesh/proto/evalmesh/v1/evaluation_pb";
import type {
  WatchEvaluationRequest,
  WatchEvaluationResponse,
} from "@evalmesh/proto/evalmesh/v1/evaluation_service_pb";
import { WatchEvaluationResponseSchema } from "@evalmesh/proto/evalmesh/v1/evaluation_service_pb";
import { describe, expect, it } from "vitest";

import type { EvaluationClient } from "../api";
import { StreamBuffer } from "../output";
import { followEvaluation, type Connection, type WatchSink } from "./follow-evaluation";

const text = (value: string) => new TextEncoder().encode(value);
const snapshot = (state: State, attempt = 1) =>
  create(WatchEvaluationResponseSchema, {
    event: { case: "evaluation", value: create(EvaluationSchema, { id: "ev", state, attempt }) },
  });
const chunk = (offset: number, data: string, stream = OutputStream.STDOUT) =>
  create(WatchEvaluationResponseSchema, {
    event: { case: "output", value: create(OutputChunkSchema, { stream, offset: BigInt(offset), data: text(data) }) },
  });

type Script = (request: WatchEvaluationRequest) => AsyncIterable<WatchEvaluationResponse>;

function fakeClient(scripts: Script[]) {
  const requests: { stdout: bigint; stderr: bigint }[] = [];
  const client = {
    watchEvaluation(request: WatchEvaluationRequest) {
      requests.push({ stdout: request.stdoutOffset, stderr: request.stderrOffset });
      const script = scripts.shift();
      if (!script) throw new Error("no more scripted streams");
      return script(request);
    },
  } as unknown as Pick<EvaluationClient, "watchEvaluation">;
  return { client, requests };
}

function recordingSink(held = { attempt: 0, stdout: "", stderr: "" }) {
  const output = { attempt: held.attempt, stdout: new StreamBuffer(), stderr: new StreamBuffer() };
  output.stdout.append(0, text(held.stdout));
  output.stderr.append(0, text(held.stderr));
  const connections: Connection["kind"][] = [];
  const states: State[] = [];
  const sink: WatchSink = {
    held: () => ({ attempt: output.attempt, stdout: output.stdout.length, stderr: output.stderr.length }),
    newAttempt: (attempt) => {
      output.attempt = attempt;
      output.stdout = new StreamBuffer();
      output.stderr = new StreamBuffer();
    },
    evaluation: (evaluation) => states.push(evaluation.state),
    output: (value: OutputChunk) =>
      (value.stream === OutputStream.STDERR ? output.stderr : output.stdout).append(Number(value.offset), value.data),
    connection: (connection) => connections.push(connection.kind),
  };
  return { sink, output, connections, states };
}

describe("followEvaluation", () => {
  it("resumes from the held offsets after a dropped stream and ends at the terminal snapshot", async () => {
    const { client, requests } = fakeClient([
      async function* () {
        yield snapshot(State.RUNNING);
        yield chunk(0, "hello ");
        yield chunk(0, "oops", OutputStream.STDERR);
        throw new ConnectError("connection reset", Code.Unavailable);
      },
      async function* () {
        yield snapshot(State.RUNNING);
        yield chunk(6, "world");
        yield snapshot(State.SUCCEEDED);
      },
    ]);
    const { sink, output, connections, states } = recordingSink();
    await followEvaluation(client, "ev", sink, new AbortController().signal, { delayMs: () => 0 });
    expect(requests).toEqual([
      { stdout: 0n, stderr: 0n },
      { stdout: 6n, stderr: 4n },
    ]);
    expect(output.stdout.text).toBe("hello world");
    expect(output.stderr.text).toBe("oops");
    expect(states).toEqual([State.RUNNING, State.RUNNING, State.SUCCEEDED]);
    expect(connections).toEqual(["connecting", "live", "retrying", "live", "ended"]);
  });

  it("reads the output that follows the terminal snapshot of an evaluation that already ended", async () => {
    const { client, requests } = fakeClient([
      async function* () {
        yield snapshot(State.FAILED);
        yield chunk(0, "partial ");
        yield chunk(0, "Traceback", OutputStream.STDERR);
        yield chunk(8, "output");
      },
    ]);
    const { sink, output, connections } = recordingSink();
    await followEvaluation(client, "ev", sink, new AbortController().signal, { delayMs: () => 0 });
    expect(requests).toHaveLength(1);
    expect(output.stdout.text).toBe("partial output");
    expect(output.stderr.text).toBe("Traceback");
    expect(connections).toEqual(["connecting", "live", "ended"]);
  });

  it("reconnects for the rest of the output when a stream breaks after the terminal snapshot", async () => {
    const { client, requests } = fakeClient([
      async function* () {
        yield snapshot(State.SUCCEEDED);
        yield chunk(0, "abc");
        throw new ConnectError("reset", Code.Unavailable);
      },
      async function* () {
        yield snapshot(State.SUCCEEDED);
        yield chunk(3, "def");
      },
    ]);
    const { sink, output } = recordingSink();
    await followEvaluation(client, "ev", sink, new AbortController().signal, { delayMs: () => 0 });
    expect(requests.map((request) => request.stdout)).toEqual([0n, 3n]);
    expect(output.stdout.text).toBe("abcdef");
  });

  it("reconnects at once from the held bytes when a chunk leaves a gap", async () => {
    const { client, requests } = fakeClient([
      async function* () {
        yield snapshot(State.RUNNING);
        yield chunk(0, "ab");
        yield chunk(5, "fgh");
      },
      async function* () {
        yield snapshot(State.RUNNING);
        yield chunk(2, "cdefgh");
        yield snapshot(State.FAILED);
      },
    ]);
    const { sink, output } = recordingSink();
    await followEvaluation(client, "ev", sink, new AbortController().signal, { delayMs: () => 0 });
    expect(requests.map((r) => r.stdout)).toEqual([0n, 2n]);
    expect(output.stdout.text).toBe("abcdefgh");
  });

  it("drops the output of a lost attempt when the next attempt announces itself mid-stream", async () => {
    const { client, requests } = fakeClient([
      async function* () {
        yield snapshot(State.RUNNING, 1);
        yield chunk(0, "first try ");
        yield snapshot(State.QUEUED, 1);
        yield snapshot(State.RUNNING, 2);
        yield chunk(0, "second try");
        yield snapshot(State.SUCCEEDED, 2);
      },
    ]);
    const { sink, output } = recordingSink();
    await followEvaluation(client, "ev", sink, new AbortController().signal, { delayMs: () => 0 });
    expect(requests).toHaveLength(1);
    expect(output.stdout.text).toBe("second try");
    expect(output.attempt).toBe(2);
  });

  it("asks again from offset 0 when a resumed stream belongs to a newer attempt than the held output", async () => {
    const { client, requests } = fakeClient([
      async function* () {
        yield snapshot(State.RUNNING, 2); // the server skipped 5 bytes of attempt 2 for us: not ours
      },
      async function* () {
        yield snapshot(State.RUNNING, 2);
        yield chunk(0, "fresh");
        yield snapshot(State.SUCCEEDED, 2);
      },
    ]);
    const { sink, output } = recordingSink({ attempt: 1, stdout: "stale", stderr: "" });
    await followEvaluation(client, "ev", sink, new AbortController().signal, { delayMs: () => 0 });
    expect(requests).toEqual([
      { stdout: 5n, stderr: 0n },
      { stdout: 0n, stderr: 0n },
    ]);
    expect(output.stdout.text).toBe("fresh");
  });

  it("stops for good on an error retrying cannot fix", async () => {
    const { client, requests } = fakeClient([
      // eslint-disable-next-line require-yield
      async function* () {
        throw new ConnectError("no such evaluation", Code.NotFound);
      },
    ]);
    const { sink, connections } = recordingSink();
    await followEvaluation(client, "ev", sink, new AbortController().signal, { delayMs: () => 0 });
    expect(requests).toHaveLength(1);
    expect(connections).toEqual(["connecting", "failed"]);
  });

  it("backs off longer after each failed connect", async () => {
    const delays: number[] = [];
    const failing: Script = async function* () {
      yield* [];
      throw new ConnectError("down", Code.Unavailable);
    };
    const { client } = fakeClient([
      failing,
      failing,
      failing,
      async function* () {
        yield snapshot(State.CANCELLED);
      },
    ]);
    const { sink } = recordingSink();
    await followEvaluation(client, "ev", sink, new AbortController().signal, {
      delayMs: (attempt) => {
        delays.push(attempt);
        return 0;
      },
    });
    expect(delays).toEqual([1, 2, 3]);
  });

  it("returns quietly when the caller aborts", async () => {
    const controller = new AbortController();
    const { client } = fakeClient([
      async function* (): AsyncGenerator<WatchEvaluationResponse> {
        yield snapshot(State.RUNNING);
        controller.abort();
        throw new ConnectError("aborted", Code.Canceled);
      },
    ]);
    const { sink, connections } = recordingSink();
    await followEvaluation(client, "ev", sink, controller.signal);
    expect(connections).toEqual(["connecting", "live"]);
  });
});
