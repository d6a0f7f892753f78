import { create } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { EvaluationSchema, Evaluation_State as State } from "@evalmesh/proto/evalmesh/v1/evaluation_pb";
import { describe, expect, it } from "vitest";

import { stageBreakdown, totalSeconds } from "./stage-breakdown";

const now = new Date("2026-01-01T12:00:00Z");
const at = (seconds: number) => timestampFromDate(new Date(now.getTime() + seconds * 1000));
const spans = (stages: ReturnType<typeof stageBreakdown>) =>
  stages.map((stage) => [stage.key, Number(stage.seconds.toFixed(3)), stage.ongoing]);

describe("stageBreakdown", () => {
  it("splits a finished run at every moment the platform recorded", () => {
    const evaluation = create(EvaluationSchema, {
      state: State.SUCCEEDED,
      createTime: at(-10),
      startTime: at(-8),
      runStartTime: at(-7.95),
      runEndTime: at(-2.95),
      outputStoredTime: at(-2.9),
      endTime: at(-2.898),
    });
    const stages = stageBreakdown(evaluation, now);
    expect(spans(stages)).toEqual([
      ["queued", 2, false],
      ["preparing", 0.05, false],
      ["running", 5, false],
      ["storing", 0.05, false],
      ["recording", 0.002, false],
    ]);
    expect(totalSeconds(stages)).toBeCloseTo(7.102, 3);
  });

  it("makes one stage of output stored together with the result", () => {
    const evaluation = create(EvaluationSchema, {
      state: State.FAILED,
      createTime: at(-5),
      startTime: at(-4),
      runStartTime: at(-3.99),
      runEndTime: at(-1.99),
      outputStoredTime: at(-1.9),
      endTime: at(-1.9),
    });
    expect(spans(stageBreakdown(evaluation, now))).toEqual([
      ["queued", 1, false],
      ["preparing", 0.01, false],
      ["running", 2, false],
      ["finishing", 0.09, false],
    ]);
  });

  it("counts a queued evaluation's wait so far", () => {
    const evaluation = create(EvaluationSchema, { state: State.QUEUED, createTime: at(-4) });
    expect(spans(stageBreakdown(evaluation, now))).toEqual([["queued", 4, true]]);
  });

  it("counts a requeued evaluation's whole wait, not its lost attempt's claim", () => {
    const evaluation = create(EvaluationSchema, {
      state: State.QUEUED,
      attempt: 1,
      createTime: at(-30),
      startTime: at(-20),
    });
    expect(spans(stageBreakdown(evaluation, now))).toEqual([["queued", 30, true]]);
  });

  it("shows a running evaluation as claimed so far: its inner moments come with the result", () => {
    const evaluation = create(EvaluationSchema, { state: State.RUNNING, createTime: at(-3), startTime: at(-1) });
    expect(spans(stageBreakdown(evaluation, now))).toEqual([
      ["queued", 2, false],
      ["claimed", 1, true],
    ]);
  });

  it("shows only waiting for an evaluation cancelled before it ran", () => {
    const evaluation = create(EvaluationSchema, { state: State.CANCELLED, createTime: at(-3), endTime: at(-1) });
    expect(spans(stageBreakdown(evaluation, now))).toEqual([["queued", 2, false]]);
  });

  it("keeps claim to result as one stage when the run's moments were not recorded", () => {
    const evaluation = create(EvaluationSchema, {
      state: State.ERROR,
      createTime: at(-9),
      startTime: at(-6),
      endTime: at(-1),
    });
    expect(spans(stageBreakdown(evaluation, now))).toEqual([
      ["queued", 3, false],
      ["claimed", 5, false],
    ]);
  });

  it("has nothing to show without a creation time", () => {
    expect(stageBreakdown(create(EvaluationSchema, { state: State.QUEUED }), now)).toEqual([]);
  });
});
