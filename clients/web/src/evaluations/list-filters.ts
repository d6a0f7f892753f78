/**
 * The evaluations list's filters and the ListEvaluationsRequest they make. Time presets are fixed to
 * an absolute instant when chosen, so the request (and its page tokens) stays the same from one
 * poll to the next.
 */
import { create } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import type { Evaluation_State as State, Priority } from "@evalmesh/proto/evalmesh/v1/evaluation_pb";
import {
  ListEvaluationsRequestSchema,
  type ListEvaluationsRequest,
} from "@evalmesh/proto/evalmesh/v1/evaluation_service_pb";

import { parseLabels } from "../format";

export type TimePreset = "any" | "15m" | "1h" | "24h" | "7d" | "custom";

export const TIME_PRESETS: readonly { value: TimePreset; label: string; ms?: number }[] = [
  { value: "any", label: "Any time" },
  { value: "15m", label: "Last 15 minutes", ms: 15 * 60_000 },
  { value: "1h", label: "Last hour", ms: 3_600_000 },
  { value: "24h", label: "Last 24 hours", ms: 86_400_000 },
  { value: "7d", label: "Last 7 days", ms: 7 * 86_400_000 },
  { value: "custom", label: "Between…" },
];

export interface ListFilters {
  states: State[];
  /** priority is one class, or undefined for all. */
  priority?: Priority;
  /** labels are "key=value" pairs that must all match. */
  labels: string;
  time: TimePreset;
  /** after and before bound the creation time (ISO strings), or are empty. */
  after: string;
  before: string;
}

export const NO_FILTERS: ListFilters = { states: [], labels: "", time: "any", after: "", before: "" };

export const PAGE_SIZE = 25;

/** withTimePreset applies a preset chosen at ``now``. */
export function withTimePreset(filters: ListFilters, time: TimePreset, now: Date = new Date()): ListFilters {
  const preset = TIME_PRESETS.find((item) => item.value === time);
  if (time === "custom") return { ...filters, time };
  if (!preset?.ms) return { ...filters, time: "any", after: "", before: "" };
  return { ...filters, time, after: new Date(now.getTime() - preset.ms).toISOString(), before: "" };
}

export type BuiltList = { ok: true; request: ListEvaluationsRequest } | { ok: false; error: string };

function date(text: string): Date | undefined | "invalid" {
  if (!text) return undefined;
  const value = new Date(text);
  return Number.isNaN(value.getTime()) ? "invalid" : value;
}

/** listRequest makes the request for one page of the filtered list. */
export function listRequest(filters: ListFilters, pageToken: string): BuiltList {
  const labels = parseLabels(filters.labels);
  if (!labels.ok) return { ok: false, error: `Label filter: ${labels.error}` };
  const after = date(filters.after);
  const before = date(filters.before);
  if (after === "invalid" || before === "invalid") return { ok: false, error: "Enter valid dates." };
  return {
    ok: true,
    request: create(ListEvaluationsRequestSchema, {
      pageSize: PAGE_SIZE,
      pageToken,
      states: filters.states,
      priorities: filters.priority === undefined ? [] : [filters.priority],
      labels: labels.labels,
      createTimeAfter: after ? timestampFromDate(after) : undefined,
      createTimeBefore: before ? timestampFromDate(before) : undefined,
    }),
  };
}

/** filtersKey identifies a set of filters, to restart paging and polling when they change. */
export function filtersKey(filters: ListFilters): string {
  return JSON.stringify(filters);
}
