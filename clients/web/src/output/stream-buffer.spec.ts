import { describe, expect, it } from "vitest";

import { StreamBuffer } from "./stream-buffer";

const bytes = (text: string) => new TextEncoder().encode(text);

describe("StreamBuffer", () => {
  it("appends chunks in order and keeps only new bytes of overlapping ones", () => {
    const buffer = new StreamBuffer();
    expect(buffer.append(0, bytes("hello "))).toBe("appended");
    expect(buffer.append(3, bytes("lo world"))).toBe("appended");
    expect(buffer.append(0, bytes("hel"))).toBe("duplicate");
    expect(buffer.text).toBe("hello world");
    expect(buffer.length).toBe(11);
  });

  it("reports a gap instead of holding bytes out of place", () => {
    const buffer = new StreamBuffer();
    buffer.append(0, bytes("ab"));
    expect(buffer.append(5, bytes("xyz"))).toBe("gap");
    expect(buffer.text).toBe("ab");
  });

  it("decodes a character split across chunks", () => {
    const euro = bytes("€"); // three bytes
    const buffer = new StreamBuffer();
    buffer.append(0, euro.subarray(0, 1));
    expect(buffer.text).toBe("");
    buffer.append(1, euro.subarray(1));
    expect(buffer.text).toBe("€");
  });

  it("shows a sequence cut off at the end once the stream is finished", () => {
    const buffer = new StreamBuffer();
    buffer.append(0, new Uint8Array([0x61, 0xe2, 0x82]));
    buffer.finish();
    buffer.finish();
    expect(buffer.text).toBe("a\ufffd");
    expect(Array.from(buffer.bytes())).toEqual([0x61, 0xe2, 0x82]);
  });

  it("leaves out a character the output cap cut in two, and keeps its bytes", () => {
    const buffer = new StreamBuffer();
    buffer.append(0, new Uint8Array([0x61, 0xff, 0xe2, 0x82, 0xac, 0xf0, 0x9f, 0x98]));
    buffer.finish(true);
    expect(buffer.text).toBe("a\ufffd€");
    expect(buffer.length).toBe(8);
    expect(Array.from(buffer.bytes())).toEqual([0x61, 0xff, 0xe2, 0x82, 0xac, 0xf0, 0x9f, 0x98]);
  });
});
