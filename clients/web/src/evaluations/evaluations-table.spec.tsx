// @vitest-environment jsdom
import { create } from "@bufbuild/protobuf";
import { EvaluationSchema, Evaluation_State as State } from "@evalmesh/proto/evalmesh/v1/evaluation_pb";
import { fireEvent, render, screen } from "@testing-library/react";
import { describe, expect, it, vi } from "vitest";

import { EvaluationsTable } from "./evaluations-table";

const rows = [
  create(EvaluationSchema, { id: "ev_a", state: State.RUNNING }),
  create(EvaluationSchema, { id: "ev_b", state: State.SUCCEEDED }),
];

describe("EvaluationsTable", () => {
  it("links each row to its monitor and selects one or all rows", () => {
    const onSelect = vi.fn();
    render(<EvaluationsTable rows={rows} selected={new Set(["ev_a"])} onSelect={onSelect} now={new Date()} />);
    expect(screen.getByRole("link", { name: "ev_b" }).getAttribute("href")).toBe("#/evaluations/ev_b");
    expect(screen.getByLabelText<HTMLInputElement>("Select ev_a").checked).toBe(true);
    fireEvent.click(screen.getByLabelText("Select ev_b"));
    expect(onSelect).toHaveBeenLastCalledWith(["ev_b"], true);
    fireEvent.click(screen.getByLabelText("Select every evaluation on this page"));
    expect(onSelect).toHaveBeenLastCalledWith(["ev_a", "ev_b"], true);
  });
});
