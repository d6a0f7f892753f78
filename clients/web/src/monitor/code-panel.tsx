import type { EvaluationSpec } from "@evalmesh/proto/evalmesh/v1/evaluation_pb";
import { useState, type SyntheticEvent } from "react";

import { evaluations, toProblem } from "../api";
import { ProblemBanner } from "../ui";

type Loaded =
  | { kind: "idle" }
  | { kind: "loading" }
  | { kind: "loaded"; spec?: EvaluationSpec }
  | { kind: "failed"; message: string };

/** CodePanel shows, when opened, the code and stdin that ran; they are fetched on first opening. */
export function CodePanel({ id }: { id: string }) {
  const [loaded, setLoaded] = useState<Loaded>({ kind: "idle" });

  const onToggle = (event: SyntheticEvent<HTMLDetailsElement>) => {
    if (!event.currentTarget.open || loaded.kind !== "idle") return;
    setLoaded({ kind: "loading" });
    evaluations.getEvaluation({ id }).then(
      (reply) => setLoaded({ kind: "loaded", spec: reply.evaluation?.spec }),
      (error: unknown) => setLoaded({ kind: "failed", message: toProblem(error).message }),
    );
  };

  const stdin = loaded.kind === "loaded" && loaded.spec ? new TextDecoder().decode(loaded.spec.stdin) : "";
  return (
    <details className="code-panel" onToggle={onToggle}>
      <summary>Code that ran</summary>
      {loaded.kind === "loading" ? <p className="muted">Loading…</p> : null}
      {loaded.kind === "failed" ? <ProblemBanner problem={loaded.message} /> : null}
      {loaded.kind === "loaded" ? (
        <>
          <pre className="code-listing" data-testid="code-listing">
            {(loaded.spec?.code ?? "")
              .replace(/\n$/, "")
              .split("\n")
              .map((line, index) => (
                <span key={index} className="code-line">
                  {line}
                  {"\n"}
                </span>
              ))}
          </pre>
          {stdin ? (
            <>
              <h4>stdin</h4>
              <pre className="code-listing">{stdin}</pre>
            </>
          ) : null}
        </>
      ) : null}
    </details>
  );
}
