// @vitest-environment jsdom
import { create } from "@bufbuild/protobuf";
import { TimestampSchema } from "@bufbuild/protobuf/wkt";
import { EvaluationSchema, Evaluation_State as State } from "@evalmesh/proto/evalmesh/v1/evaluation_pb";
import { render, screen } from "@testing-library/react";
import { describe, expect, it } from "vitest";

import { StageBreakdown, stageSpan } from "./stage-breakdown-view";

const base = Math.floor(Date.now() / 1000) - 60;
// Microseconds, as storage records them (a Date would round them to milliseconds).
const at = (seconds: number) => {
  const micros = Math.round(seconds * 1e6);
  return create(TimestampSchema, {
    seconds: BigInt(base + Math.floor(micros / 1e6)),
    nanos: (micros % 1e6) * 1000,
  });
};

describe("StageBreakdown", () => {
  it("draws one segment and one line per recorded stage, with its share of the total", () => {
    const evaluation = create(EvaluationSchema, {
      state: State.SUCCEEDED,
      createTime: at(0),
      startTime: at(1),
      runStartTime: at(1.02),
      runEndTime: at(4.02),
      outputStoredTime: at(4.0201),
      endTime: at(4.03),
    });
    render(<StageBreakdown evaluation={evaluation} />);
    expect(screen.getByRole("heading").textContent).toContain("4.03 s");
    expect(screen.getByTestId("stage-queued").textContent).toContain("1 s");
    expect(screen.getByTestId("stage-preparing").textContent).toContain("20 ms");
    expect(screen.getByTestId("stage-running").textContent).toMatch(/3 s.*74 %/);
    expect(screen.getByTestId("stage-storing").textContent).toContain("< 1 ms");
    expect(screen.getByTestId("stage-recording").textContent).toContain("10 ms");
    const bar = screen.getByRole("img");
    expect(bar.children).toHaveLength(5);
    expect(bar.getAttribute("aria-label")).toContain("Running 3 s");
  });

  it("renders nothing for an evaluation with no recorded moment", () => {
    const { container } = render(<StageBreakdown evaluation={create(EvaluationSchema, { state: State.QUEUED })} />);
    expect(container.textContent).toBe("");
  });

  it("says so for a span below a millisecond", () => {
    expect(stageSpan(0.0004)).toBe("< 1 ms");
    expect(stageSpan(0)).toBe("0 ms");
  });
});
