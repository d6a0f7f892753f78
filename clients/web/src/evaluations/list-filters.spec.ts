import { timestampDate } from "@bufbuild/protobuf/wkt";
import { Evaluation_State as State, Priority } from "@evalmesh/proto/evalmesh/v1/evaluation_pb";
import { describe, expect, it } from "vitest";

import { NO_FILTERS, PAGE_SIZE, listRequest, withTimePreset } from "./list-filters";

describe("list filters", () => {
  it("asks for one page without filters", () => {
    const built = listRequest(NO_FILTERS, "");
    expect(built).toMatchObject({
      ok: true,
      request: { pageSize: PAGE_SIZE, pageToken: "", states: [], priorities: [] },
    });
  });

  it("combines states, priority, labels and time", () => {
    const filters = withTimePreset(
      { ...NO_FILTERS, states: [State.FAILED, State.ERROR], priority: Priority.HIGH, labels: "team=ml, run=7" },
      "1h",
      new Date("2026-01-01T12:00:00Z"),
    );
    const built = listRequest(filters, "token-2");
    if (!built.ok) throw new Error(built.error);
    const request = built.request;
    expect(request.states).toEqual([State.FAILED, State.ERROR]);
    expect(request.priorities).toEqual([Priority.HIGH]);
    expect(request.labels).toEqual({ team: "ml", run: "7" });
    expect(request.pageToken).toBe("token-2");
    expect(request.createTimeAfter && timestampDate(request.createTimeAfter).toISOString()).toBe(
      "2026-01-01T11:00:00.000Z",
    );
    expect(request.createTimeBefore).toBeUndefined();
  });

  it("fixes a preset's instant when it is chosen, so polling keeps the same request", () => {
    const chosen = withTimePreset(NO_FILTERS, "15m", new Date("2026-01-01T12:00:00Z"));
    const first = listRequest(chosen, "");
    const later = listRequest(chosen, "");
    expect(first).toEqual(later);
    expect(withTimePreset(chosen, "any")).toMatchObject({ time: "any", after: "" });
  });

  it("explains a label filter it cannot read", () => {
    expect(listRequest({ ...NO_FILTERS, labels: "team" }, "")).toEqual({
      ok: false,
      error: 'Label filter: "team" is not key=value',
    });
  });
});
