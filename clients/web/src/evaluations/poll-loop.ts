/**
 * One polling loop for a whole view: it never overlaps itself, waits a delay measured from the last
 * round (so a slow server is asked less often), backs off on errors, pauses while the page is
 * hidden, and can be asked to refresh now. A view polls one request per round, never one per row.
 */

export interface Round<T> {
  result?: T;
  error?: unknown;
  /** elapsedMs is how long the round's request took. */
  elapsedMs: number;
  /** failures counts consecutive failed rounds. */
  failures: number;
}

export interface PollLoopOptions<T> {
  run: (signal: AbortSignal) => Promise<T>;
  onResult: (result: T) => void;
  onError: (error: unknown) => void;
  /** nextDelay says how long to wait after a round. */
  nextDelay: (round: Round<T>) => number;
  /** hidden says whether the page is hidden (polling then waits until it is visible). */
  hidden?: () => boolean;
}

export interface PollLoop {
  /** refresh runs a round now (after the one in flight, if any). */
  refresh: () => void;
  stop: () => void;
}

/** measuredDelay polls busy views about 20 request-times apart (1 s to 10 s), idle ones every 15 s. */
export function measuredDelay(elapsedMs: number, busy: boolean, failures: number): number {
  if (failures > 0) return Math.min(30_000, 1000 * 2 ** failures);
  if (!busy) return 15_000;
  return Math.min(10_000, Math.max(1000, elapsedMs * 20));
}

export function startPollLoop<T>(options: PollLoopOptions<T>): PollLoop {
  const hidden = options.hidden ?? (() => typeof document !== "undefined" && document.hidden);
  const controller = new AbortController();
  // A function, not the property: TypeScript would otherwise assume it unchanged across awaits.
  const stopped = () => controller.signal.aborted;
  let timer: ReturnType<typeof setTimeout> | undefined;
  let running = false;
  let again = false;
  let failures = 0;
  let waitingForVisible = false;

  const onVisibility = () => {
    if (!hidden() && waitingForVisible) {
      waitingForVisible = false;
      void round();
    }
  };

  const schedule = (delay: number) => {
    timer = setTimeout(() => {
      timer = undefined;
      if (hidden()) waitingForVisible = true;
      else void round();
    }, delay);
  };

  async function round(): Promise<void> {
    if (controller.signal.aborted) return;
    running = true;
    const started = performance.now();
    let outcome: Round<T>;
    try {
      const result = await options.run(controller.signal);
      failures = 0;
      outcome = { result, elapsedMs: performance.now() - started, failures };
      if (!stopped()) options.onResult(result);
    } catch (error) {
      failures += 1;
      outcome = { error, elapsedMs: performance.now() - started, failures };
      if (!stopped()) options.onError(error);
    }
    running = false;
    if (stopped()) return;
    if (again) {
      again = false;
      void round();
      return;
    }
    schedule(options.nextDelay(outcome));
  }

  if (typeof document !== "undefined") document.addEventListener("visibilitychange", onVisibility);
  void round();

  return {
    refresh() {
      if (controller.signal.aborted) return;
      if (running) {
        again = true;
        return;
      }
      if (timer !== undefined) clearTimeout(timer);
      timer = undefined;
      waitingForVisible = false;
      void round();
    },
    stop() {
      controller.abort();
      if (timer !== undefined) clearTimeout(timer);
      if (typeof document !== "undefined") document.removeEventListener("visibilitychange", onVisibility);
    },
  };
}
