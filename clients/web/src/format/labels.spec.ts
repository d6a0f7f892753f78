import { describe, expect, it } from "vitest";

import { formatLabels, parseLabels } from "./labels";

describe("labels", () => {
  it("reads comma and newline separated pairs, trimming spaces", () => {
    expect(parseLabels(" team = ml ,\nrun=7, empty=")).toEqual({
      ok: true,
      labels: { team: "ml", run: "7", empty: "" },
    });
  });

  it("treats an empty field as no labels", () => {
    expect(parseLabels("  ")).toEqual({ ok: true, labels: {} });
  });

  it("refuses an item without a key and a repeated key", () => {
    expect(parseLabels("team")).toEqual({ ok: false, error: '"team" is not key=value' });
    expect(parseLabels("=x")).toMatchObject({ ok: false });
    expect(parseLabels("a=1, a=2")).toEqual({ ok: false, error: 'label "a" is given twice' });
  });

  it("renders labels back in key order", () => {
    expect(formatLabels({ b: "2", a: "1" })).toBe("a=1, b=2");
  });
});
