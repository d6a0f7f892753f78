import { describe, expect, it } from "vitest";

import { formatBytes } from "./bytes";

describe("formatBytes", () => {
  it("keeps small counts in bytes with the right plural", () => {
    expect(formatBytes(0)).toBe("0 bytes");
    expect(formatBytes(1)).toBe("1 byte");
    expect(formatBytes(1023)).toBe("1023 bytes");
  });

  it("uses IEC units and drops needless decimals", () => {
    expect(formatBytes(1024)).toBe("1 KiB");
    expect(formatBytes(1536)).toBe("1.5 KiB");
    expect(formatBytes(256n * 1024n * 1024n)).toBe("256 MiB");
    expect(formatBytes(4n * 1024n ** 3n)).toBe("4 GiB");
    expect(formatBytes(12_345_678)).toBe("11.8 MiB");
  });
});
