// @vitest-environment jsdom
import { render, screen } from "@testing-library/react";
import { describe, expect, it } from "vitest";

import { ActivityChart, waitScale } from "./activity-chart";

const points = [
  { at: 0, completed: 3, started: 3, p90Wait: 0.4 },
  { at: 60_000, completed: 7, started: 6, p90Wait: 2.5 },
  { at: 120_000, completed: 0, started: 0 },
];

describe("waitScale", () => {
  it("rounds the longest p90 up, with at least a second", () => {
    expect(waitScale([])).toBe(1);
    expect(waitScale(points)).toBe(4);
  });
});

describe("ActivityChart", () => {
  it("draws a bar per bucket and the wait line through the buckets that had starts", () => {
    render(<ActivityChart points={points} windowSeconds={180} />);
    const chart = screen.getByTestId("activity-chart");
    expect(chart.querySelectorAll("rect.activity-bar")).toHaveLength(3);
    expect(chart.querySelector("polyline")?.getAttribute("points")?.split(" ")).toHaveLength(2);
    expect(chart.querySelectorAll("circle.activity-wait")).toHaveLength(2);
    expect(chart.getAttribute("aria-label")).toBe(
      "Evaluations completed per 1 min over the last 3 min (10 in all), and the 90th percentile queue wait.",
    );
  });
});
