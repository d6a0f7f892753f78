import { useEffect, useRef, useState } from "react";

import { startPollLoop, type PollLoop, type Round } from "./poll-loop";

export interface Polled<T> {
  data?: T;
  error?: unknown;
  /** updatedAt is when data last arrived. */
  updatedAt?: Date;
  /** delayMs is the wait chosen after the last round. */
  delayMs?: number;
  refresh: () => void;
}

/**
 * usePollLoop polls ``run`` with one loop per component, restarting it when ``key`` changes (new
 * filters, another page). ``nextDelay`` picks the wait after each round from what it measured.
 */
export function usePollLoop<T>(
  key: string,
  run: (signal: AbortSignal) => Promise<T>,
  nextDelay: (round: Round<T>) => number,
): Polled<T> {
  const [state, setState] = useState<Omit<Polled<T>, "refresh">>({});
  const loop = useRef<PollLoop | null>(null);
  const latest = useRef({ run, nextDelay });
  useEffect(() => {
    latest.current = { run, nextDelay };
  });

  useEffect(() => {
    const started = startPollLoop<T>({
      run: (signal) => latest.current.run(signal),
      onResult: (data) => setState((current) => ({ ...current, data, error: undefined, updatedAt: new Date() })),
      onError: (error) => setState((current) => ({ ...current, error })),
      nextDelay: (round) => {
        const delayMs = latest.current.nextDelay(round);
        setState((current) => ({ ...current, delayMs }));
        return delayMs;
      },
    });
    loop.current = started;
    return () => {
      started.stop();
      loop.current = null;
    };
  }, [key]);

  return { ...state, refresh: () => loop.current?.refresh() };
}
