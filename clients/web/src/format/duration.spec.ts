import { create } from "@bufbuild/protobuf";
import { DurationSchema } from "@bufbuild/protobuf/wkt";
import { describe, expect, it } from "vitest";

import { durationSeconds, formatDuration, formatSeconds } from "./duration";

describe("durations", () => {
  it("converts seconds and nanos", () => {
    expect(durationSeconds(create(DurationSchema, { seconds: 2n, nanos: 500_000_000 }))).toBe(2.5);
  });

  it("picks a unit people read at a glance", () => {
    expect(formatSeconds(0.0123)).toBe("12 ms");
    expect(formatSeconds(2.345)).toBe("2.35 s");
    expect(formatSeconds(42.26)).toBe("42.3 s");
    expect(formatSeconds(245)).toBe("4 min 5 s");
    expect(formatSeconds(600)).toBe("10 min");
    expect(formatSeconds(7380)).toBe("2 h 3 min");
  });

  it("shows a dash for a missing duration", () => {
    expect(formatDuration(undefined)).toBe("–");
  });
});
