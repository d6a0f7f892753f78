import { create } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import {
  EvaluationResultSchema,
  EvaluationSchema,
  Evaluation_State as State,
  Fault,
  TerminationCause as Cause,
} from "@evalmesh/proto/evalmesh/v1/evaluation_pb";
import { describe, expect, it } from "vitest";

import { causeText, timelineSteps } from "./state-timeline";

const now = new Date("2026-01-01T12:00:00Z");
const at = (seconds: number) => timestampFromDate(new Date(now.getTime() + seconds * 1000));

describe("timelineSteps", () => {
  it("shows a queued evaluation's place in the queue and its estimated start", () => {
    const evaluation = create(EvaluationSchema, {
      state: State.QUEUED,
      createTime: at(-5),
      queuePosition: 3n,
      estimatedStartTime: at(12),
    });
    const [queued, running, ended] = timelineSteps(evaluation, now);
    expect(queued).toMatchObject({ status: "current", details: ["3 evaluations ahead", "estimated start in 12 s"] });
    expect(running?.status).toBe("pending");
    expect(ended).toMatchObject({ status: "pending", title: "Finished" });
  });

  it("says when a queued evaluation is next", () => {
    const evaluation = create(EvaluationSchema, { state: State.QUEUED, queuePosition: 0n });
    expect(timelineSteps(evaluation, now)[0]?.details).toEqual(["next to start"]);
  });

  it("shows the attempt and executor while running, and a pending cancel", () => {
    const evaluation = create(EvaluationSchema, {
      state: State.RUNNING,
      attempt: 2,
      executorId: "exec-a",
      startTime: at(-1),
      cancelRequested: true,
    });
    const [queued, running] = timelineSteps(evaluation, now);
    expect(queued?.status).toBe("done");
    expect(running).toMatchObject({
      status: "current",
      details: ["attempt 2 (1 lost to platform faults)", "on exec-a", "cancel requested; stopping"],
    });
  });

  it("says how long an evaluation waited and ran once it ended", () => {
    const evaluation = create(EvaluationSchema, {
      state: State.SUCCEEDED,
      createTime: at(-10),
      startTime: at(-8),
      endTime: at(-5.5),
      attempt: 1,
      result: create(EvaluationResultSchema, { cause: Cause.EXITED, exitCode: 0, fault: Fault.NONE }),
    });
    const [queued, running, ended] = timelineSteps(evaluation, now);
    expect(queued?.details).toEqual(["waited 2 s"]);
    expect(running?.details).toEqual(["ran 2.5 s", "attempt 1"]);
    expect(ended).toMatchObject({ title: "Succeeded", tone: "ok", details: ["exited with code 0"] });
  });

  it("ends with the state, the cause and who was at fault", () => {
    const evaluation = create(EvaluationSchema, {
      state: State.FAILED,
      startTime: at(-3),
      endTime: at(-1),
      attempt: 1,
      result: create(EvaluationResultSchema, { cause: Cause.EXITED, exitCode: 1, fault: Fault.USER }),
    });
    const ended = timelineSteps(evaluation, now)[2];
    expect(ended).toMatchObject({
      title: "Failed",
      status: "done",
      tone: "bad",
      details: ["exited with code 1", "caused by the program (user fault)"],
    });
  });

  it("marks the running step skipped when a queued evaluation was cancelled", () => {
    const evaluation = create(EvaluationSchema, {
      state: State.CANCELLED,
      result: create(EvaluationResultSchema, {
        cause: Cause.CANCELLED,
        fault: Fault.USER,
        detail: "Cancelled by a client",
      }),
    });
    const [, running, ended] = timelineSteps(evaluation, now);
    expect(running).toMatchObject({ status: "skipped", details: ["never started"] });
    // No fault line for a cancel, and a detail that repeats the cause is not shown twice.
    expect(ended).toMatchObject({ title: "Cancelled", tone: "neutral", details: ["cancelled by a client"] });
  });

  it("names the platform as at fault for an ERROR", () => {
    const evaluation = create(EvaluationSchema, {
      state: State.ERROR,
      result: create(EvaluationResultSchema, {
        cause: Cause.MAX_ATTEMPTS,
        fault: Fault.PLATFORM,
        detail: "executor lost 3 times",
      }),
    });
    expect(timelineSteps(evaluation, now)[2]?.details).toEqual([
      "every attempt lost to platform faults",
      "caused by the platform (not your program)",
      "executor lost 3 times",
    ]);
  });
});

describe("causeText", () => {
  it("names the signal that killed the program", () => {
    const evaluation = create(EvaluationSchema, {
      state: State.FAILED,
      result: create(EvaluationResultSchema, { cause: Cause.SIGNALED, signal: 11 }),
    });
    expect(causeText(evaluation)).toBe("killed by signal 11 (SIGSEGV)");
  });
});
