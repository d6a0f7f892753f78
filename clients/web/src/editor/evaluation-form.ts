/**
 * The new-evaluation form as plain data: its values, the request they make, and where the gateway's
 * field violations belong. Bounds are not repeated here: the gateway checks them against the
 * operator's settings, and its violation (with the bound) is shown on the field it names.
 */
import { create } from "@bufbuild/protobuf";
import { DurationSchema } from "@bufbuild/protobuf/wkt";
import { LimitsSchema, Priority, type EvaluationSpec } from "@evalmesh/proto/evalmesh/v1/evaluation_pb";
import {
  CreateEvaluationRequestSchema,
  type CreateEvaluationRequest,
} from "@evalmesh/proto/evalmesh/v1/evaluation_service_pb";

import type { FieldViolation } from "../api";
import { durationSeconds, formatBytes, formatLabels, parseLabels } from "../format";

export interface FormValues {
  code: string;
  stdin: string;
  runtime: string;
  priority: Priority;
  /** timeoutSeconds is the wall-clock limit in seconds; empty means the default. */
  timeoutSeconds: string;
  /** memoryMiB is the memory limit in MiB; empty means the default. */
  memoryMiB: string;
  /** outputKiB caps stdout and stderr, each, in KiB; empty means the default. */
  outputKiB: string;
  /** labels are "key=value" pairs separated by commas or newlines. */
  labels: string;
}

export type FormField = keyof FormValues;
export type FieldErrors = Partial<Record<FormField, string>>;

export const DEFAULT_VALUES: FormValues = {
  code: 'print("Hello, world!")\n',
  stdin: "",
  runtime: "python",
  priority: Priority.NORMAL,
  timeoutSeconds: "",
  memoryMiB: "",
  outputKiB: "",
  labels: "",
};

const MIB = 1024 * 1024;

function number(text: string): number | undefined | "invalid" {
  const trimmed = text.trim();
  if (!trimmed) return undefined;
  const value = Number(trimmed);
  return Number.isFinite(value) ? value : "invalid";
}

export type BuiltRequest = { ok: true; request: CreateEvaluationRequest } | { ok: false; errors: FieldErrors };

/** buildRequest turns form values into a CreateEvaluationRequest, or says which fields are not numbers. */
export function buildRequest(values: FormValues, requestId: string): BuiltRequest {
  const errors: FieldErrors = {};
  const timeout = number(values.timeoutSeconds);
  const memory = number(values.memoryMiB);
  const output = number(values.outputKiB);
  const labels = parseLabels(values.labels);
  if (timeout === "invalid") errors.timeoutSeconds = "enter a number of seconds";
  if (memory === "invalid") errors.memoryMiB = "enter a number of MiB";
  if (output === "invalid") errors.outputKiB = "enter a number of KiB";
  if (!labels.ok) errors.labels = labels.error;
  if (
    Object.keys(errors).length > 0 ||
    timeout === "invalid" ||
    memory === "invalid" ||
    output === "invalid" ||
    !labels.ok
  ) {
    return { ok: false, errors };
  }
  const limits = create(LimitsSchema, {
    wallTimeout:
      timeout === undefined
        ? undefined
        : create(DurationSchema, { seconds: BigInt(Math.trunc(timeout)), nanos: Math.round((timeout % 1) * 1e9) }),
    memoryBytes: memory === undefined ? undefined : BigInt(Math.round(memory * MIB)),
    maxOutputBytes: output === undefined ? undefined : BigInt(Math.round(output * 1024)),
  });
  const request = create(CreateEvaluationRequestSchema, {
    requestId,
    spec: {
      code: values.code,
      stdin: new TextEncoder().encode(values.stdin),
      language: "python",
      runtime: values.runtime,
      priority: values.priority,
      limits,
      labels: labels.labels,
    },
  });
  return { ok: true, request };
}

/** valuesFromSpec fills the form from an evaluation's spec, to edit and run it again. */
export function valuesFromSpec(spec: EvaluationSpec): FormValues {
  const limits = spec.limits;
  return {
    code: spec.code,
    stdin: new TextDecoder().decode(spec.stdin),
    runtime: spec.runtime || DEFAULT_VALUES.runtime,
    priority: spec.priority || Priority.NORMAL,
    timeoutSeconds: limits?.wallTimeout ? String(durationSeconds(limits.wallTimeout)) : "",
    memoryMiB: limits?.memoryBytes !== undefined ? String(Number(limits.memoryBytes) / MIB) : "",
    outputKiB: limits?.maxOutputBytes !== undefined ? String(Number(limits.maxOutputBytes) / 1024) : "",
    labels: formatLabels(spec.labels),
  };
}

const FIELDS: Readonly<Record<string, FormField>> = {
  "spec.code": "code",
  "spec.stdin": "stdin",
  "spec.runtime": "runtime",
  "spec.language": "runtime",
  "spec.priority": "priority",
  "spec.limits.wall_timeout": "timeoutSeconds",
  "spec.limits.memory_bytes": "memoryMiB",
  "spec.limits.max_output_bytes": "outputKiB",
  "spec.labels": "labels",
};

/** fieldFor names the form field a violation's field path belongs to, if the form has one. */
export function fieldFor(path: string): FormField | undefined {
  if (path.startsWith("spec.labels[")) return "labels";
  return FIELDS[path];
}

/** humanize rewrites byte counts in a description of a byte field in IEC units. */
export function humanize(path: string, description: string): string {
  if (!path.endsWith("_bytes") && path !== "spec.code" && path !== "spec.stdin") return description;
  // Only a description of a size holds byte counts; "NUL (U+0000) on line 2" holds none.
  if (!/\bbytes?\b/.test(description)) return description;
  // Numbers may come as 16777216 or, from Python's %g, as 1.67772e+07; either reads as 16 MiB.
  return description.replace(/\b(\d+(?:\.\d+)?(?:e[+-]?\d+)?)(\s+bytes?\b)?/gi, (_match, number: string) =>
    formatBytes(Math.round(Number(number))),
  );
}

/** placeViolations sorts the gateway's violations onto form fields; the rest are returned apart. */
export function placeViolations(violations: readonly FieldViolation[]): {
  fields: FieldErrors;
  unplaced: FieldViolation[];
} {
  const fields: FieldErrors = {};
  const unplaced: FieldViolation[] = [];
  for (const violation of violations) {
    const field = fieldFor(violation.field);
    const text = humanize(violation.field, violation.description);
    if (field) fields[field] = fields[field] ? `${fields[field]}; ${text}` : text;
    else unplaced.push(violation);
  }
  return { fields, unplaced };
}
