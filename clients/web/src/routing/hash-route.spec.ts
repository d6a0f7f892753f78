import { describe, expect, it } from "vitest";

import { parseHash, routeHref, type Route } from "./hash-route";

describe("hash routes", () => {
  it("reads every place of the app", () => {
    expect(parseHash("")).toEqual({ page: "new" });
    expect(parseHash("#/")).toEqual({ page: "new" });
    expect(parseHash("#/new?from=ev_1")).toEqual({ page: "new", from: "ev_1" });
    expect(parseHash("#/evaluations")).toEqual({ page: "evaluations" });
    expect(parseHash("#/evaluations/01HXYZ-abc_9")).toEqual({ page: "evaluation", id: "01HXYZ-abc_9" });
    expect(parseHash("#/cluster")).toEqual({ page: "cluster" });
  });

  it("refuses ids that cannot be evaluation ids", () => {
    expect(parseHash("#/evaluations/a%20b").page).toBe("not-found");
    expect(parseHash("#/new?from=<script>")).toEqual({ page: "new" });
    expect(parseHash("#/nowhere")).toEqual({ page: "not-found", path: "/nowhere" });
  });

  it("writes hrefs that read back as the same route", () => {
    const routes: Route[] = [
      { page: "new" },
      { page: "new", from: "ev1" },
      { page: "evaluations" },
      { page: "evaluation", id: "ev1" },
      { page: "cluster" },
    ];
    for (const route of routes) expect(parseHash(routeHref(route))).toEqual(route);
  });
});
