import { useCallback, useEffect, useMemo, useState, type ReactNode } from "react";

import { apiKeyStore } from "./api-key-store";
import { checkKey } from "./check-key";
import { SessionContext, type Session, type SessionApi } from "./session-context";

/** SessionProvider holds who is signed in, re-checks a stored key on load, and follows sign-outs. */
export function SessionProvider({ children }: { children: ReactNode }) {
  const [session, setSession] = useState<Session>(() =>
    apiKeyStore.get() ? { status: "checking" } : { status: "signed-out" },
  );

  useEffect(() => {
    const stored = apiKeyStore.get();
    if (stored) {
      void checkKey(stored).then((check) => {
        if (apiKeyStore.get() !== stored) return;
        if (check.ok) setSession({ status: "signed-in", admin: check.admin });
        else apiKeyStore.clear("expired");
      });
    }
    return apiKeyStore.subscribe((reason) => {
      if (reason) setSession({ status: "signed-out", reason });
    });
  }, []);

  const signIn = useCallback(async (key: string) => {
    const check = await checkKey(key.trim());
    if (!check.ok) return check.problem.message;
    apiKeyStore.set(key.trim());
    setSession({ status: "signed-in", admin: check.admin });
    return "";
  }, []);

  const signOut = useCallback(() => apiKeyStore.clear("signed-out"), []);

  const api = useMemo<SessionApi>(() => ({ session, signIn, signOut }), [session, signIn, signOut]);
  return <SessionContext.Provider value={api}>{children}</SessionContext.Provider>;
}
