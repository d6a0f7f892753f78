// @vitest-environment jsdom
import { create } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { EvaluationSchema, Evaluation_State as State } from "@evalmesh/proto/evalmesh/v1/evaluation_pb";
import { render, screen } from "@testing-library/react";
import { describe, expect, it } from "vitest";

import { StateTimeline } from "./state-timeline-view";

describe("StateTimeline", () => {
  it("marks the current step for assistive tech and lists what is known of it", () => {
    const evaluation = create(EvaluationSchema, {
      state: State.QUEUED,
      createTime: timestampFromDate(new Date()),
      queuePosition: 3n,
    });
    render(<StateTimeline evaluation={evaluation} />);
    const queued = screen.getByTestId("timeline-queued");
    expect(queued.getAttribute("aria-current")).toBe("step");
    expect(queued.textContent).toContain("3 evaluations ahead");
    expect(screen.getByTestId("timeline-running").getAttribute("aria-current")).toBeNull();
    expect(screen.getByTestId("timeline-ended").textContent).toContain("Finished");
  });
});
