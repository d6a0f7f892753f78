import type { Duration } from "@bufbuild/protobuf/wkt";

/** durationSeconds converts a protobuf Duration to (fractional) seconds. */
export function durationSeconds(duration: Duration): number {
  return Number(duration.seconds) + duration.nanos / 1e9;
}

/** formatSeconds renders a span for people: "850 ms", "2.35 s", "4 min 5 s", "2 h 3 min". */
export function formatSeconds(seconds: number): string {
  if (!Number.isFinite(seconds)) return "–";
  const abs = Math.abs(seconds);
  if (abs < 1) return `${Math.round(seconds * 1000)} ms`;
  if (abs < 60) return `${Number(seconds.toFixed(abs < 10 ? 2 : 1))} s`;
  const whole = Math.round(abs);
  const sign = seconds < 0 ? "-" : "";
  if (whole < 3600) return `${sign}${Math.floor(whole / 60)} min${whole % 60 ? ` ${whole % 60} s` : ""}`;
  return `${sign}${Math.floor(whole / 3600)} h ${Math.floor((whole % 3600) / 60)} min`;
}

/** formatDuration renders a protobuf Duration, or a dash when it is missing. */
export function formatDuration(duration: Duration | undefined): string {
  return duration ? formatSeconds(durationSeconds(duration)) : "–";
}
