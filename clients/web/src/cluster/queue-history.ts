/** Queue depth per priority over time, sampled from GetQueueStats, for the dashboard's chart. */
import { Priority } from "@evalmesh/proto/evalmesh/v1/evaluation_pb";
import type { QueueStats } from "@evalmesh/proto/evalmesh/v1/cluster_pb";

import { toDate } from "../format";

export type ChartPriority = Priority.HIGH | Priority.NORMAL | Priority.LOW;

export interface QueueSample {
  /** at is the observation time in epoch milliseconds. */
  at: number;
  depth: Record<ChartPriority, number>;
  running: number;
}

export const HISTORY_WINDOW_MS = 10 * 60_000;

/** sampleOf reads one sample from a stats snapshot. */
export function sampleOf(stats: QueueStats, received: Date = new Date()): QueueSample {
  const depth: Record<ChartPriority, number> = { [Priority.HIGH]: 0, [Priority.NORMAL]: 0, [Priority.LOW]: 0 };
  for (const entry of stats.priorities) {
    if (entry.priority === Priority.HIGH || entry.priority === Priority.NORMAL || entry.priority === Priority.LOW) {
      depth[entry.priority] = Number(entry.depth);
    }
  }
  const at = (toDate(stats.observeTime) ?? received).getTime();
  return { at, depth, running: Number(stats.running) };
}

/** addSample appends ``sample`` and forgets samples older than the window; repeats are ignored. */
export function addSample(
  history: readonly QueueSample[],
  sample: QueueSample,
  windowMs = HISTORY_WINDOW_MS,
): QueueSample[] {
  const last = history[history.length - 1];
  if (last && sample.at <= last.at) return [...history];
  return [...history, sample].filter((item) => item.at >= sample.at - windowMs);
}
