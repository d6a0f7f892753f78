/**
 * The server's view of the last hour (GetQueueActivity): what storage computed from the stored
 * timestamps of every tenant's evaluations, whoever had the dashboard open, turned into chart
 * points and summary figures.
 */
import type { Duration } from "@bufbuild/protobuf/wkt";
import type { QueueActivity, WaitSummary } from "@evalmesh/proto/evalmesh/v1/cluster_pb";

import { durationSeconds, formatSeconds, toDate } from "../format";

export interface ActivityPoint {
  /** at is the bucket's start in epoch milliseconds. */
  at: number;
  completed: number;
  started: number;
  /** p90Wait is the 90th percentile queue wait (seconds) of the bucket's starts, if any started. */
  p90Wait?: number;
}

export interface Waits {
  count: number;
  p50: number;
  p90: number;
  p99: number;
  max: number;
}

export interface ActivitySummary {
  windowSeconds: number;
  completed: number;
  started: number;
  perMinute: number;
  waits?: Waits;
  /** partial is true when the waits describe only the latest of the window's starts. */
  partial: boolean;
}

const seconds = (duration: Duration | undefined) => (duration ? durationSeconds(duration) : 0);

function waitsOf(wait: WaitSummary | undefined): Waits | undefined {
  if (!wait || wait.count === 0n) return undefined;
  return {
    count: Number(wait.count),
    p50: seconds(wait.p50),
    p90: seconds(wait.p90),
    p99: seconds(wait.p99),
    max: seconds(wait.max),
  };
}

/** activityPoints is one point per bucket, oldest first. */
export function activityPoints(activity: QueueActivity): ActivityPoint[] {
  return activity.buckets.map((bucket) => {
    const point: ActivityPoint = {
      at: toDate(bucket.startTime)?.getTime() ?? 0,
      completed: Number(bucket.completed),
      started: Number(bucket.started),
    };
    const waits = waitsOf(bucket.wait);
    if (waits) point.p90Wait = waits.p90;
    return point;
  });
}

/** activitySummary is the window's totals, rate and wait percentiles. */
export function activitySummary(activity: QueueActivity): ActivitySummary {
  const start = toDate(activity.startTime)?.getTime() ?? 0;
  const end = toDate(activity.endTime)?.getTime() ?? start;
  const windowSeconds = Math.max(0, (end - start) / 1000);
  const completed = Number(activity.completed);
  const waits = waitsOf(activity.wait);
  return {
    windowSeconds,
    completed,
    started: Number(activity.started),
    perMinute: windowSeconds > 0 ? completed / (windowSeconds / 60) : 0,
    waits,
    partial: waits !== undefined && BigInt(waits.count) < activity.started,
  };
}

/** formatWindow names a window for people: "1 h", "10 min", "24 h", else the plain span. */
export function formatWindow(seconds: number): string {
  if (seconds > 0 && seconds % 3600 === 0) return `${seconds / 3600} h`;
  if (seconds > 0 && seconds % 60 === 0) return `${seconds / 60} min`;
  return formatSeconds(seconds);
}
