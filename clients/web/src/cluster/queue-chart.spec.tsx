// @vitest-environment jsdom
import { Priority } from "@evalmesh/proto/evalmesh/v1/evaluation_pb";
import { render, screen } from "@testing-library/react";
import { describe, expect, it } from "vitest";

import { QueueChart, chartSpan, linePoints, niceMax } from "./queue-chart";
import type { QueueSample } from "./queue-history";

const sample = (at: number, high: number, normal: number, low: number): QueueSample => ({
  at,
  depth: { [Priority.HIGH]: high, [Priority.NORMAL]: normal, [Priority.LOW]: low },
  running: 0,
});

describe("niceMax", () => {
  it("rounds up to readable tick values", () => {
    expect(niceMax(0)).toBe(4);
    expect(niceMax(7)).toBe(10);
    expect(niceMax(13)).toBe(20);
    expect(niceMax(42)).toBe(50);
    expect(niceMax(100)).toBe(100);
  });
});

describe("linePoints", () => {
  it("puts the newest sample at the right edge and scales depth to the plot", () => {
    const samples = [sample(0, 0, 0, 0), sample(60_000, 0, 10, 0)];
    expect(linePoints(samples, Priority.NORMAL, { width: 640, height: 220, max: 10, spanMs: 60_000 })).toBe(
      "40.0,192.0 626.0,12.0",
    );
  });
});

describe("chartSpan", () => {
  it("covers the samples' own time, at least a minute and at most the window", () => {
    expect(chartSpan([sample(0, 0, 0, 0), sample(5000, 0, 0, 0)], 600_000)).toBe(60_000);
    expect(chartSpan([sample(0, 0, 0, 0), sample(240_000, 0, 0, 0)], 600_000)).toBe(240_000);
    expect(chartSpan([sample(0, 0, 0, 0), sample(900_000, 0, 0, 0)], 600_000)).toBe(600_000);
  });
});

describe("QueueChart", () => {
  it("draws one line per priority and states the current depths in words", () => {
    render(<QueueChart samples={[sample(0, 1, 2, 3), sample(2000, 0, 5, 1)]} maxSpanMs={600_000} />);
    const chart = screen.getByTestId("queue-chart");
    expect(chart.querySelectorAll("polyline")).toHaveLength(3);
    expect(chart.getAttribute("aria-label")).toBe(
      "Queue depth per priority over the last 1 min. Now: High 0, Normal 5, Low 1.",
    );
    expect(screen.getByTestId("queue-depth-normal").textContent).toBe("Normal: 5 queued");
  });

  it("says when there is nothing to draw yet", () => {
    render(<QueueChart samples={[]} maxSpanMs={600_000} />);
    expect(screen.getByTestId("queue-chart").getAttribute("aria-label")).toBe(
      "Queue depth per priority: no samples yet.",
    );
  });
});
