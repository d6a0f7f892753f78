import { useState, type SyntheticEvent } from "react";

import { useSession } from "./session-context";

/** SignInPage asks for an API key; the key stays in this tab's session storage only. */
export function SignInPage() {
  const { session, signIn } = useSession();
  const [key, setKey] = useState("");
  const [error, setError] = useState("");
  const [busy, setBusy] = useState(false);
  const expired = session.status === "signed-out" && session.reason === "expired";

  const submit = async (event: SyntheticEvent) => {
    event.preventDefault();
    if (!key.trim()) {
      setError("Enter an API key.");
      return;
    }
    setBusy(true);
    setError(await signIn(key));
    setBusy(false);
  };

  return (
    <main id="main" className="sign-in">
      <form className="card" onSubmit={(event) => void submit(event)} aria-labelledby="sign-in-title">
        <h1 id="sign-in-title">Sign in to evalmesh</h1>
        {expired ? (
          <p className="banner banner-error" role="alert">
            Your API key is no longer accepted. Sign in again.
          </p>
        ) : null}
        <div className={`field${error ? " field-invalid" : ""}`}>
          <label htmlFor="api-key">API key</label>
          <input
            id="api-key"
            type="password"
            autoComplete="off"
            spellCheck={false}
            autoFocus
            value={key}
            aria-invalid={Boolean(error)}
            aria-describedby={error ? "api-key-hint api-key-error" : "api-key-hint"}
            onChange={(event) => setKey(event.target.value)}
          />
          <div id="api-key-hint" className="hint">
            Kept only in this tab&apos;s session storage; signing out or closing the tab forgets it.
          </div>
          {error ? (
            <div id="api-key-error" className="field-error" role="alert">
              {error}
            </div>
          ) : null}
        </div>
        <button type="submit" className="primary" disabled={busy}>
          {busy ? "Checking…" : "Sign in"}
        </button>
      </form>
    </main>
  );
}
