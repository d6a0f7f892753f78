import { create } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { PriorityQueueStatsSchema, QueueStatsSchema } from "@evalmesh/proto/evalmesh/v1/cluster_pb";
import { Priority } from "@evalmesh/proto/evalmesh/v1/evaluation_pb";
import { describe, expect, it } from "vitest";

import { addSample, sampleOf, type QueueSample } from "./queue-history";

const sample = (at: number, normal: number): QueueSample => ({
  at,
  depth: { [Priority.HIGH]: 0, [Priority.NORMAL]: normal, [Priority.LOW]: 0 },
  running: 0,
});

describe("queue history", () => {
  it("reads depth per priority and the observation time from a snapshot", () => {
    const stats = create(QueueStatsSchema, {
      priorities: [
        create(PriorityQueueStatsSchema, { priority: Priority.HIGH, depth: 2n }),
        create(PriorityQueueStatsSchema, { priority: Priority.LOW, depth: 7n }),
      ],
      running: 3n,
      observeTime: timestampFromDate(new Date(1_000_000)),
    });
    expect(sampleOf(stats)).toEqual({
      at: 1_000_000,
      depth: { [Priority.HIGH]: 2, [Priority.NORMAL]: 0, [Priority.LOW]: 7 },
      running: 3,
    });
  });

  it("keeps only the window and ignores a repeated snapshot", () => {
    let history: QueueSample[] = [];
    history = addSample(history, sample(0, 1), 1000);
    history = addSample(history, sample(600, 2), 1000);
    history = addSample(history, sample(600, 9), 1000);
    history = addSample(history, sample(1500, 3), 1000);
    expect(history.map((item) => item.depth[Priority.NORMAL])).toEqual([2, 3]);
  });
});
