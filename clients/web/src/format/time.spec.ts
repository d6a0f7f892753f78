import { describe, expect, it } from "vitest";

import { formatAge, formatRelative } from "./time";

describe("formatRelative", () => {
  const now = new Date("2026-01-01T12:00:00Z");

  it("says how long ago and how long until", () => {
    expect(formatRelative(new Date("2026-01-01T11:59:48Z"), now)).toBe("12 s ago");
    expect(formatRelative(new Date("2026-01-01T12:03:02Z"), now)).toBe("in 3 min 2 s");
    expect(formatRelative(now, now)).toBe("now");
  });

  it("never says an update happened in the future", () => {
    expect(formatAge(new Date("2026-01-01T12:00:03Z"), now)).toBe("just now");
    expect(formatAge(new Date("2026-01-01T11:59:50Z"), now)).toBe("10 s ago");
  });
});
