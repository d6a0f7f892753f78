import { Priority } from "@evalmesh/proto/evalmesh/v1/evaluation_pb";
import { describe, expect, it } from "vitest";

import { DEFAULT_VALUES, buildRequest, humanize, placeViolations, valuesFromSpec } from "./evaluation-form";

describe("buildRequest", () => {
  it("leaves empty limits unset so the operator's defaults apply", () => {
    const built = buildRequest(DEFAULT_VALUES, "req-1");
    expect(built.ok).toBe(true);
    if (!built.ok) return;
    const limits = built.request.spec?.limits;
    expect(limits?.wallTimeout).toBeUndefined();
    expect(limits?.memoryBytes).toBeUndefined();
    expect(limits?.maxOutputBytes).toBeUndefined();
    expect(built.request.requestId).toBe("req-1");
  });

  it("converts the form's units to the API's", () => {
    const built = buildRequest(
      {
        ...DEFAULT_VALUES,
        timeoutSeconds: "2.5",
        memoryMiB: "64",
        outputKiB: "16",
        labels: "team=ml",
        stdin: "42\n",
        priority: Priority.HIGH,
      },
      "req-2",
    );
    if (!built.ok) throw new Error("expected a request");
    const spec = built.request.spec;
    expect(spec?.limits?.wallTimeout).toMatchObject({ seconds: 2n, nanos: 500_000_000 });
    expect(spec?.limits?.memoryBytes).toBe(64n * 1024n * 1024n);
    expect(spec?.limits?.maxOutputBytes).toBe(16n * 1024n);
    expect(spec?.labels).toEqual({ team: "ml" });
    expect(spec?.priority).toBe(Priority.HIGH);
    expect(new TextDecoder().decode(spec?.stdin)).toBe("42\n");
  });

  it("sends out-of-range numbers on, for the gateway to judge against its bounds", () => {
    const built = buildRequest({ ...DEFAULT_VALUES, memoryMiB: "1" }, "r");
    expect(built.ok).toBe(true);
  });

  it("names fields that are not numbers or not labels", () => {
    expect(buildRequest({ ...DEFAULT_VALUES, memoryMiB: "lots", labels: "oops" }, "r")).toEqual({
      ok: false,
      errors: { memoryMiB: "enter a number of MiB", labels: '"oops" is not key=value' },
    });
  });

  it("reads back what it wrote, for edit and run again", () => {
    const values = { ...DEFAULT_VALUES, timeoutSeconds: "12", memoryMiB: "64", outputKiB: "8", labels: "a=1, b=2" };
    const built = buildRequest(values, "r");
    if (!built.ok || !built.request.spec) throw new Error("expected a request");
    expect(valuesFromSpec(built.request.spec)).toEqual(values);
  });
});

describe("placeViolations", () => {
  it("puts each violation on its field and keeps the bound, in readable units", () => {
    const { fields, unplaced } = placeViolations([
      { field: "spec.limits.memory_bytes", description: "must be between 16777216 and 4294967296 bytes, got 1048576" },
      { field: "spec.limits.wall_timeout", description: "must be between 1 and 900 seconds, got 0.5" },
      { field: "spec.labels['Bad Key']", description: "keys are 1 to 63 of a-z, 0-9" },
      { field: "spec.limits.max_processes", description: "must be between 1 and 256 processes, got 0" },
    ]);
    expect(fields).toEqual({
      memoryMiB: "must be between 16 MiB and 4 GiB, got 1 MiB",
      timeoutSeconds: "must be between 1 and 900 seconds, got 0.5",
      labels: "keys are 1 to 63 of a-z, 0-9",
    });
    expect(unplaced).toEqual([
      { field: "spec.limits.max_processes", description: "must be between 1 and 256 processes, got 0" },
    ]);
  });

  it("joins two violations of one field", () => {
    const { fields } = placeViolations([
      { field: "spec.labels['x']", description: "first" },
      { field: "spec.labels['y']", description: "second" },
    ]);
    expect(fields.labels).toBe("first; second");
  });
});

describe("humanize", () => {
  it("only rewrites numbers of byte fields", () => {
    expect(humanize("spec.limits.max_output_bytes", "must be between 1 and 16777216 bytes, got 0")).toBe(
      "must be between 1 byte and 16 MiB, got 0 bytes",
    );
    expect(humanize("spec.limits.wall_timeout", "between 1 and 900 seconds")).toBe("between 1 and 900 seconds");
  });

  it("leaves the numbers of a byte field's other rules alone", () => {
    const nul = "must not contain NUL characters (U+0000), found on line 2";
    expect(humanize("spec.code", nul)).toBe(nul);
    expect(humanize("spec.code", "must be at most 1048576 bytes, got 1048577")).toBe(
      "must be at most 1 MiB, got 1 MiB",
    );
  });

  it("reads byte counts printed in exponent notation", () => {
    expect(
      humanize("spec.limits.memory_bytes", "must be between 1.67772e+07 and 4.29497e+09 bytes, got 1.04858e+06"),
    ).toBe("must be between 16 MiB and 4 GiB, got 1 MiB");
  });
});
