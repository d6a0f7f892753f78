// @vitest-environment jsdom
import { describe, expect, it, vi } from "vitest";

import { apiKeyStore } from "./api-key-store";

describe("apiKeyStore", () => {
  it("keeps the key in sessionStorage, not localStorage", () => {
    apiKeyStore.set("emk_secret");
    expect(apiKeyStore.get()).toBe("emk_secret");
    expect(sessionStorage.getItem("evalmesh.apiKey")).toBe("emk_secret");
    expect(localStorage.length).toBe(0);
  });

  it("clears the key and the UI's other session entries on sign-out, and tells listeners why", () => {
    const listener = vi.fn();
    const unsubscribe = apiKeyStore.subscribe(listener);
    apiKeyStore.set("emk_secret");
    sessionStorage.setItem("evalmesh.output.abc", "{}");
    sessionStorage.setItem("someone-else", "kept");
    apiKeyStore.clear("expired");
    unsubscribe();
    expect(apiKeyStore.get()).toBe("");
    expect(sessionStorage.getItem("evalmesh.output.abc")).toBeNull();
    expect(sessionStorage.getItem("someone-else")).toBe("kept");
    expect(listener).toHaveBeenLastCalledWith("expired");
  });
});
