import { createContext, useContext } from "react";

import type { SignOutReason } from "./api-key-store";

export type Session =
  { status: "signed-out"; reason?: SignOutReason } | { status: "checking" } | { status: "signed-in"; admin: boolean };

export interface SessionApi {
  session: Session;
  /** signIn checks ``key`` and keeps it for this tab; it resolves to an error message or "". */
  signIn: (key: string) => Promise<string>;
  signOut: () => void;
}

export const SessionContext = createContext<SessionApi | null>(null);

/** useSession returns the session of the SessionProvider above. */
export function useSession(): SessionApi {
  const api = useContext(SessionContext);
  if (!api) throw new Error("useSession needs a SessionProvider");
  return api;
}
