// @vitest-environment jsdom
import { describe, expect, it } from "vitest";

import { loadOutput, saveOutput } from "./output-cache";

describe("output cache", () => {
  it("round-trips any bytes", () => {
    const stdout = Uint8Array.from({ length: 256 }, (_, i) => i);
    saveOutput("ev1", { attempt: 2, stdout, stderr: new Uint8Array([0xff]) });
    const loaded = loadOutput("ev1");
    expect(Array.from(loaded?.stdout ?? [])).toEqual(Array.from(stdout));
    expect(Array.from(loaded?.stderr ?? [])).toEqual([0xff]);
    expect(loaded?.attempt).toBe(2);
  });

  it("drops an output too large to keep, so the watch replays it", () => {
    saveOutput("big", { attempt: 1, stdout: new Uint8Array(10), stderr: new Uint8Array() });
    saveOutput("big", { attempt: 1, stdout: new Uint8Array(300 * 1024), stderr: new Uint8Array() });
    expect(loadOutput("big")).toBeUndefined();
  });

  it("keeps only the most recent few evaluations", () => {
    for (let i = 0; i < 8; i += 1)
      saveOutput(`ev${i}`, { attempt: 1, stdout: new Uint8Array([i]), stderr: new Uint8Array() });
    expect(loadOutput("ev0")).toBeUndefined();
    expect(loadOutput("ev7")?.stdout[0]).toBe(7);
  });
});
