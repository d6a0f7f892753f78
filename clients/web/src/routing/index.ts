export { navigate, parseHash, routeHref, type Route } from "./hash-route";
export { useHashRoute } from "./use-hash-route";
