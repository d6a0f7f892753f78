import type { Timestamp } from "@bufbuild/protobuf/wkt";
import { timestampDate } from "@bufbuild/protobuf/wkt";

import { formatSeconds } from "./duration";

/** toDate converts a protobuf Timestamp, treating an unset one as missing. */
export function toDate(timestamp: Timestamp | undefined): Date | undefined {
  return timestamp ? timestampDate(timestamp) : undefined;
}

/** formatClock renders a wall-clock time, with the date when it is not today. */
export function formatClock(date: Date, now: Date = new Date()): string {
  const sameDay = date.toDateString() === now.toDateString();
  const time = date.toLocaleTimeString(undefined, { hour12: false });
  return sameDay ? time : `${date.toLocaleDateString()} ${time}`;
}

/** formatAge says how long ago ``date`` was, treating a moment ahead of ``now`` as "just now". */
export function formatAge(date: Date, now: Date = new Date()): string {
  return date.getTime() >= now.getTime() - 1000 ? "just now" : formatRelative(date, now);
}

/** formatRelative renders how far ``date`` is from ``now``: "12 s ago", "in 3 min 2 s". */
export function formatRelative(date: Date, now: Date = new Date()): string {
  const seconds = (date.getTime() - now.getTime()) / 1000;
  if (Math.abs(seconds) < 1) return "now";
  const span = formatSeconds(Math.abs(seconds) < 60 ? Math.round(Math.abs(seconds)) : Math.abs(seconds));
  return seconds < 0 ? `${span} ago` : `in ${span}`;
}
