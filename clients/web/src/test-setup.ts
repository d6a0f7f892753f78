// Unmounts what each test rendered and forgets session storage, so specs never see each other's state.
import { cleanup } from "@testing-library/react";
import { afterEach } from "vitest";

afterEach(() => {
  if (typeof document === "undefined") return;
  cleanup();
  sessionStorage.clear();
});
