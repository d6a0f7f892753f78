import { useSyncExternalStore } from "react";

import { parseHash, type Route } from "./hash-route";

function subscribe(onChange: () => void): () => void {
  window.addEventListener("hashchange", onChange);
  return () => window.removeEventListener("hashchange", onChange);
}

const currentHash = () => window.location.hash;

/** useHashRoute returns the route in the URL and re-renders when it changes. */
export function useHashRoute(): Route {
  return parseHash(useSyncExternalStore(subscribe, currentHash));
}
