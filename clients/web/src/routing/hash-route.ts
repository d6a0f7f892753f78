/**
 * The app's places, kept in the URL hash so a reload or a shared link opens the same view (and the
 * server only ever serves "/"): #/new, #/evaluations, #/evaluations/ID, #/cluster.
 */

export type Route =
  | { page: "new"; from?: string }
  | { page: "evaluations" }
  | { page: "evaluation"; id: string }
  | { page: "cluster" }
  | { page: "not-found"; path: string };

const ID = /^[A-Za-z0-9_-]{1,64}$/;

/** parseHash reads a location hash ("#/evaluations/abc") into a route. */
export function parseHash(hash: string): Route {
  const [path = "", query = ""] = hash.replace(/^#/, "").split("?", 2);
  const parts = path.split("/").filter(Boolean).map(decodeURIComponent);
  const params = new URLSearchParams(query);
  if (parts.length === 0 || (parts.length === 1 && parts[0] === "new")) {
    const from = params.get("from") ?? undefined;
    return from && ID.test(from) ? { page: "new", from } : { page: "new" };
  }
  if (parts[0] === "evaluations" && parts.length === 1) return { page: "evaluations" };
  if (parts[0] === "evaluations" && parts.length === 2 && ID.test(parts[1] ?? "")) {
    return { page: "evaluation", id: parts[1] ?? "" };
  }
  if (parts[0] === "cluster" && parts.length === 1) return { page: "cluster" };
  return { page: "not-found", path };
}

/** routeHref returns the href of a route, for links. */
export function routeHref(route: Route): string {
  switch (route.page) {
    case "new":
      return route.from ? `#/new?from=${encodeURIComponent(route.from)}` : "#/new";
    case "evaluations":
      return "#/evaluations";
    case "evaluation":
      return `#/evaluations/${encodeURIComponent(route.id)}`;
    case "cluster":
      return "#/cluster";
    case "not-found":
      return `#${route.path}`;
  }
}

/** navigate goes to ``route``, adding a history entry. */
export function navigate(route: Route): void {
  window.location.hash = routeHref(route);
}
