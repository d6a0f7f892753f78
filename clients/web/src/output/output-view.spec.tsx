// @vitest-environment jsdom
import { render, screen } from "@testing-library/react";
import { describe, expect, it } from "vitest";

import { OutputView } from "./output-view";

describe("OutputView", () => {
  it("draws control characters as marked stand-ins, never as raw characters", () => {
    render(
      <OutputView
        name="stdout"
        label="Standard output"
        text={"ok\u001b[2Jbell\u0007"}
        byteCount={12}
        truncated={false}
        ended
      />,
    );
    const pane = screen.getByTestId("stdout-text");
    expect(pane.textContent).toBe("ok\\x1b[2Jbell\\x07");
    const escaped = pane.querySelectorAll(".escaped");
    expect(escaped).toHaveLength(2);
    expect(escaped[0]?.getAttribute("title")).toBe("\\x1b");
  });

  it("marks truncation with the cap that was applied", () => {
    render(<OutputView name="stderr" label="Standard error" text="x" byteCount={1} truncated limit={1048576n} ended />);
    expect(screen.getByTestId("stderr-truncated").textContent).toContain("more than 1 MiB");
  });

  it.each([
    ["the start", "a" + "😀".repeat(300_000)],
    ["the end", "😀".repeat(300_000) + "a"],
    ["a line break", "a" + "\r\n".repeat(300_000)],
  ])("never splits a character or a line break where it cuts a long output short (%s)", (_, text) => {
    render(<OutputView name="stdout" label="Standard output" text={text} byteCount={0} truncated={false} ended />);
    const drawn = screen.getByTestId("stdout-text").textContent;
    expect(drawn).toContain("characters not drawn here");
    expect(drawn).not.toMatch(/[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/);
    expect(drawn).not.toContain("\\r");
  });

  it("says when there is no output", () => {
    const { rerender } = render(
      <OutputView name="stdout" label="Standard output" text="" byteCount={0} truncated={false} ended={false} />,
    );
    expect(screen.getByTestId("stdout-text").textContent).toBe("(no output yet)");
    rerender(<OutputView name="stdout" label="Standard output" text="" byteCount={0} truncated={false} ended />);
    expect(screen.getByTestId("stdout-text").textContent).toBe("(no output)");
  });
});
