// @vitest-environment jsdom
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";

import { measuredDelay, startPollLoop, type Round } from "./poll-loop";

describe("measuredDelay", () => {
  it("waits about twenty request-times while busy, within 1 s to 10 s", () => {
    expect(measuredDelay(20, true, 0)).toBe(1000);
    expect(measuredDelay(150, true, 0)).toBe(3000);
    expect(measuredDelay(2000, true, 0)).toBe(10_000);
  });

  it("slows down when nothing is in flight and backs off on failures", () => {
    expect(measuredDelay(20, false, 0)).toBe(15_000);
    expect(measuredDelay(20, true, 1)).toBe(2000);
    expect(measuredDelay(20, true, 3)).toBe(8000);
    expect(measuredDelay(20, true, 10)).toBe(30_000);
  });
});

describe("startPollLoop", () => {
  beforeEach(() => {
    vi.useFakeTimers();
  });
  afterEach(() => {
    vi.useRealTimers();
  });

  it("runs one round at a time, waiting the measured delay between rounds", async () => {
    let inFlight = 0;
    let maxInFlight = 0;
    const run = vi.fn(async () => {
      inFlight += 1;
      maxInFlight = Math.max(maxInFlight, inFlight);
      await new Promise((resolve) => setTimeout(resolve, 100));
      inFlight -= 1;
      return "ok";
    });
    const onResult = vi.fn();
    const loop = startPollLoop({ run, onResult, onError: vi.fn(), nextDelay: () => 1000, hidden: () => false });
    await vi.advanceTimersByTimeAsync(100);
    expect(onResult).toHaveBeenCalledTimes(1);
    loop.refresh();
    loop.refresh(); // while one runs: queued for after it, never run beside it
    await vi.advanceTimersByTimeAsync(5000);
    loop.stop();
    expect(maxInFlight).toBe(1);
    // Rounds start at 0, 100 (refresh), 200 (queued refresh), then 1.1 s apart: 1300, 2400, 3500, 4600.
    expect(run).toHaveBeenCalledTimes(7);
  });

  it("reports errors and keeps polling with the delay it is given", async () => {
    const run = vi.fn().mockRejectedValueOnce(new Error("down")).mockResolvedValue("ok");
    const onError = vi.fn();
    const nextDelay = vi.fn<(round: Round<string>) => number>(() => 500);
    const loop = startPollLoop({ run, onResult: vi.fn(), onError, nextDelay, hidden: () => false });
    await vi.advanceTimersByTimeAsync(600);
    loop.stop();
    expect(onError).toHaveBeenCalledTimes(1);
    expect(nextDelay.mock.calls[0]?.[0]).toMatchObject({ failures: 1 });
    expect(run).toHaveBeenCalledTimes(2);
  });

  it("pauses while the page is hidden", async () => {
    let hidden = false;
    const run = vi.fn(async () => "ok");
    const loop = startPollLoop({
      run,
      onResult: vi.fn(),
      onError: vi.fn(),
      nextDelay: () => 100,
      hidden: () => hidden,
    });
    await vi.advanceTimersByTimeAsync(0);
    hidden = true;
    await vi.advanceTimersByTimeAsync(1000);
    const whileHidden = run.mock.calls.length;
    await vi.advanceTimersByTimeAsync(1000);
    expect(run.mock.calls.length).toBe(whileHidden);
    hidden = false;
    document.dispatchEvent(new Event("visibilitychange"));
    await vi.advanceTimersByTimeAsync(0);
    expect(run.mock.calls.length).toBe(whileHidden + 1);
    loop.stop();
  });

  it("stops for good", async () => {
    const run = vi.fn(async () => "ok");
    const loop = startPollLoop({ run, onResult: vi.fn(), onError: vi.fn(), nextDelay: () => 100, hidden: () => false });
    await vi.advanceTimersByTimeAsync(0);
    loop.stop();
    await vi.advanceTimersByTimeAsync(1000);
    expect(run).toHaveBeenCalledTimes(1);
  });
});
