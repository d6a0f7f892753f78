import { create } from "@bufbuild/protobuf";
import { DurationSchema, TimestampSchema } from "@bufbuild/protobuf/wkt";
import { ActivityBucketSchema, QueueActivitySchema, WaitSummarySchema } from "@evalmesh/proto/evalmesh/v1/cluster_pb";
import { describe, expect, it } from "vitest";

import { activityPoints, activitySummary, formatWindow } from "./activity";

const start = 1_767_268_800n; // 2026-01-01T12:00:00Z
const at = (seconds: number) => create(TimestampSchema, { seconds: start + BigInt(seconds) });
const secs = (value: number) =>
  create(DurationSchema, { seconds: BigInt(Math.floor(value)), nanos: Math.round((value % 1) * 1e9) });
const wait = (count: number, p50: number, p90: number) =>
  create(WaitSummarySchema, { count: BigInt(count), p50: secs(p50), p90: secs(p90), p99: secs(p90), max: secs(p90) });

const activity = create(QueueActivitySchema, {
  startTime: at(0),
  endTime: at(3600),
  bucketWidth: secs(60),
  buckets: [
    create(ActivityBucketSchema, { startTime: at(0), completed: 4n, started: 5n, wait: wait(5, 0.2, 1.5) }),
    create(ActivityBucketSchema, { startTime: at(60), completed: 2n }),
  ],
  completed: 120n,
  started: 130n,
  wait: wait(100, 0.25, 2),
});

describe("activityPoints", () => {
  it("gives each bucket its throughput, and its p90 wait only when something started", () => {
    expect(activityPoints(activity)).toEqual([
      { at: Number(start) * 1000, completed: 4, started: 5, p90Wait: 1.5 },
      { at: (Number(start) + 60) * 1000, completed: 2, started: 0 },
    ]);
  });
});

describe("activitySummary", () => {
  it("states the window's totals, rate per minute and wait percentiles", () => {
    expect(activitySummary(activity)).toEqual({
      windowSeconds: 3600,
      completed: 120,
      started: 130,
      perMinute: 2,
      waits: { count: 100, p50: 0.25, p90: 2, p99: 2, max: 2 },
      partial: true,
    });
  });

  it("has no waits for a window in which nothing started", () => {
    const quiet = create(QueueActivitySchema, { startTime: at(0), endTime: at(600) });
    expect(activitySummary(quiet)).toMatchObject({ completed: 0, perMinute: 0, waits: undefined, partial: false });
  });
});

describe("formatWindow", () => {
  it("names whole hours and minutes plainly", () => {
    expect([formatWindow(3600), formatWindow(86_400), formatWindow(600), formatWindow(90)]).toEqual([
      "1 h",
      "24 h",
      "10 min",
      "1 min 30 s",
    ]);
  });
});
