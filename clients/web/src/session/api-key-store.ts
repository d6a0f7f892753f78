/**
 * The signed-in API key, kept in sessionStorage: it lives as long as the tab, survives a reload, and
 * is never written anywhere that outlives the session. Listeners hear sign-in, sign-out and expiry.
 */

const KEY = "evalmesh.apiKey";
/** Other sessionStorage entries this UI owns (cached output); cleared on sign-out too. */
const OWNED_PREFIX = "evalmesh.";

/** Why the key went away, so the sign-in page can say it. */
export type SignOutReason = "signed-out" | "expired";

type Listener = (reason?: SignOutReason) => void;

const listeners = new Set<Listener>();

function storage(): Storage | undefined {
  try {
    return window.sessionStorage;
  } catch {
    return undefined; // storage disabled: the key then lives only in memory
  }
}

let memoryKey = "";

export const apiKeyStore = {
  /** get returns the key, or "" when signed out. */
  get(): string {
    return storage()?.getItem(KEY) ?? memoryKey;
  },

  /** set stores a key for this tab. */
  set(key: string): void {
    memoryKey = key;
    storage()?.setItem(KEY, key);
    listeners.forEach((listener) => listener());
  },

  /** clear forgets the key and everything else this UI kept in the session. */
  clear(reason: SignOutReason = "signed-out"): void {
    memoryKey = "";
    const store = storage();
    if (store) {
      for (const name of Object.keys(store)) {
        if (name.startsWith(OWNED_PREFIX)) store.removeItem(name);
      }
    }
    listeners.forEach((listener) => listener(reason));
  },

  /** subscribe calls ``listener`` on every change and returns the unsubscribe function. */
  subscribe(listener: Listener): () => void {
    listeners.add(listener);
    return () => listeners.delete(listener);
  },
};
