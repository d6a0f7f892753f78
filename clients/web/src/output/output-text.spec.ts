import { describe, expect, it } from "vitest";

import { escapeOutput } from "./output-text";

const decode = (bytes: number[]) => new TextDecoder("utf-8").decode(new Uint8Array(bytes));

describe("escapeOutput", () => {
  it("leaves ordinary text, newlines and tabs alone", () => {
    expect(escapeOutput("hello\n\tworld ✓\n")).toEqual([{ text: "hello\n\tworld ✓\n", escaped: false }]);
  });

  it("reads \\r\\n as a newline but shows a lone carriage return", () => {
    expect(escapeOutput("a\r\nb\rc")).toEqual([
      { text: "a\nb", escaped: false },
      { text: "\\r", escaped: true, title: "\\x0d" },
      { text: "c", escaped: false },
    ]);
  });

  it("shows terminal escape sequences instead of obeying them", () => {
    const segments = escapeOutput("\u001b[31mred\u001b[0m");
    expect(segments[0]).toEqual({ text: "\\x1b", escaped: true, title: "\\x1b" });
    expect(segments.map((s) => s.text).join("")).toBe("\\x1b[31mred\\x1b[0m");
  });

  it("marks bytes that are not UTF-8 and NUL bytes", () => {
    const segments = escapeOutput(decode([0x61, 0xff, 0xfe, 0x00, 0x62]));
    expect(segments).toEqual([
      { text: "a", escaped: false },
      { text: "\ufffd\ufffd\\x00", escaped: true, title: "\\ufffd \\ufffd \\x00" },
      { text: "b", escaped: false },
    ]);
  });

  it("neutralises bidi overrides that could disguise text", () => {
    const segments = escapeOutput("user\u202Egnp.exe");
    expect(segments).toContainEqual({ text: "\\u202e", escaped: true, title: "\\u202e" });
  });

  it("renders every byte value visibly and keeps the text around it", () => {
    const all = decode(Array.from({ length: 256 }, (_, i) => i));
    const shown = escapeOutput(all);
    const visible = shown.map((s) => s.text).join("");
    // Nothing invisible survives: no C0 except \t and \n, no DEL, no C1.
    // eslint-disable-next-line no-control-regex
    expect(visible).not.toMatch(/[\u0000-\u0008\u000b-\u001f\u007f-\u009f]/);
    expect(visible).toContain(" !\"#$%&'()*+,-./0123456789");
    expect(shown.filter((s) => s.escaped).length).toBeGreaterThan(2);
  });
});
