// @vitest-environment jsdom
import { Code, ConnectError } from "@connectrpc/connect";
import { fireEvent, render, screen, waitFor } from "@testing-library/react";
import { beforeEach, describe, expect, it, vi } from "vitest";

import { badRequestBytes, wireError } from "../api/testing";
import { NewEvaluationPage } from "./new-evaluation-page";

// CodeMirror needs layout that jsdom lacks; a textarea stands in for it here (the e2e uses the real one).
vi.mock("./code-editor", () => ({
  CodeEditor: (props: { id: string; value: string; onChange: (value: string) => void }) => (
    <textarea id={props.id} value={props.value} onChange={(event) => props.onChange(event.target.value)} />
  ),
}));

const api = vi.hoisted(() => ({ createEvaluation: vi.fn(), getEvaluation: vi.fn(), listRuntimes: vi.fn() }));

vi.mock("../api", async (importOriginal) => ({
  ...(await importOriginal<typeof import("../api")>()),
  evaluations: { createEvaluation: api.createEvaluation, getEvaluation: api.getEvaluation },
  cluster: { listRuntimes: api.listRuntimes },
}));

describe("NewEvaluationPage", () => {
  beforeEach(() => {
    api.listRuntimes.mockResolvedValue({ runtimes: [] });
  });

  it("shows each of the gateway's field violations on its field, with the bound, and focuses the first", async () => {
    api.createEvaluation.mockRejectedValue(
      wireError("invalid request: spec.limits.memory_bytes", Code.InvalidArgument, [
        {
          type: "google.rpc.BadRequest",
          value: badRequestBytes(
            ["spec.limits.memory_bytes", "must be between 16777216 and 4294967296 bytes, got 1048576"],
            ["spec.limits.wall_timeout", "must be between 1 and 900 seconds, got 1000"],
            ["spec.limits.cpu_millicores", "must be between 100 and 4000 millicores, got 1"],
          ),
        },
      ]),
    );
    render(<NewEvaluationPage />);
    fireEvent.change(screen.getByLabelText("Memory limit (MiB)"), { target: { value: "1" } });
    fireEvent.change(screen.getByLabelText("Wall timeout (seconds)"), { target: { value: "1000" } });
    fireEvent.click(screen.getByRole("button", { name: /Run/ }));

    const memoryError = await screen.findByTestId("memory-error");
    expect(memoryError.textContent).toBe("must be between 16 MiB and 4 GiB, got 1 MiB");
    const memory = screen.getByLabelText("Memory limit (MiB)");
    expect(memory.getAttribute("aria-invalid")).toBe("true");
    expect(memory.getAttribute("aria-describedby")).toContain("memory-error");
    expect(screen.getByTestId("timeout-error").textContent).toBe("must be between 1 and 900 seconds, got 1000");
    // A violation no field shows is listed in the banner with its field path.
    expect(screen.getByRole("alert").textContent).toContain("spec.limits.cpu_millicores");
    await waitFor(() => expect(document.activeElement?.id).toBe("timeout"));
    expect(screen.getByLabelText("Code (Python)").getAttribute("aria-invalid")).toBeNull();
  });

  it("keeps a field's error until that field changes", async () => {
    api.createEvaluation.mockRejectedValue(
      wireError("invalid", Code.InvalidArgument, [
        { type: "google.rpc.BadRequest", value: badRequestBytes(["spec.labels['Bad']", "keys are 1 to 63 of a-z"]) },
      ]),
    );
    render(<NewEvaluationPage />);
    fireEvent.click(screen.getByRole("button", { name: /Run/ }));
    expect((await screen.findByTestId("labels-error")).textContent).toBe("keys are 1 to 63 of a-z");
    fireEvent.change(screen.getByLabelText("Labels"), { target: { value: "team=ml" } });
    expect(screen.queryByTestId("labels-error")).toBeNull();
  });

  it("checks the shape of numbers before sending anything", () => {
    render(<NewEvaluationPage />);
    fireEvent.change(screen.getByLabelText("Output limit per stream (KiB)"), { target: { value: "much" } });
    fireEvent.click(screen.getByRole("button", { name: /Run/ }));
    expect(screen.getByTestId("output-error").textContent).toBe("enter a number of KiB");
    expect(api.createEvaluation).not.toHaveBeenCalled();
  });

  it("submits with Ctrl+Enter and keeps the request id when the same form is retried", async () => {
    api.createEvaluation.mockRejectedValue(new ConnectError("down", Code.Unavailable));
    render(<NewEvaluationPage />);
    const form = screen.getByRole("form", { name: "New evaluation" });
    fireEvent.keyDown(form, { key: "Enter", ctrlKey: true });
    await screen.findByRole("alert");
    fireEvent.keyDown(form, { key: "Enter", metaKey: true });
    await waitFor(() => expect(api.createEvaluation).toHaveBeenCalledTimes(2));
    const [first, second] = api.createEvaluation.mock.calls.map((call) => (call[0] as { requestId: string }).requestId);
    expect(second).toBe(first);
  });
});
