import { useState } from "react";

import { evaluations, toProblem, type RpcProblem } from "../api";
import { isTerminal } from "../format";
import { OutputView } from "../output";
import { routeHref } from "../routing";
import { ProblemBanner, StateBadge, downloadBytes } from "../ui";
import { CodePanel } from "./code-panel";
import { ConnectionStatus } from "./connection-status";
import { EvaluationFacts } from "./evaluation-facts";
import { StageBreakdown } from "./stage-breakdown-view";
import { StateTimeline } from "./state-timeline-view";
import { useEvaluationWatch } from "./use-evaluation-watch";

/** EvaluationMonitor follows one evaluation live: timeline, output, measurements, cancel. */
export function EvaluationMonitor({ id }: { id: string }) {
  const { evaluation, connection, stdout, stderr, resumedBytes } = useEvaluationWatch(id);
  const [cancelling, setCancelling] = useState(false);
  const [problem, setProblem] = useState<RpcProblem>();
  const ended = evaluation ? isTerminal(evaluation.state) : false;
  const result = evaluation?.result;
  const limit = evaluation?.appliedLimits?.maxOutputBytes;

  const cancel = () => {
    setCancelling(true);
    setProblem(undefined);
    evaluations
      .cancelEvaluation({ id, reason: "cancelled in the web UI" })
      .catch((error: unknown) => setProblem(toProblem(error)))
      .finally(() => setCancelling(false));
  };

  const cancelPending = cancelling || (evaluation?.cancelRequested ?? false);
  // Not found (or another tenant's), or no permission: there is nothing to show but why.
  const unavailable = connection.kind === "failed" && !evaluation;
  return (
    <article className="monitor" aria-labelledby="monitor-title">
      <header className="page-header">
        <div>
          <h1 id="monitor-title">
            Evaluation <code className="evaluation-id">{id}</code>
          </h1>
          <div className="monitor-status" aria-live="polite">
            {evaluation ? <StateBadge state={evaluation.state} /> : null}
            <ConnectionStatus connection={connection} />
            {resumedBytes > 0 ? (
              <span className="muted">resumed from {resumedBytes} bytes kept in this tab</span>
            ) : null}
          </div>
        </div>
        <div className="actions" hidden={unavailable}>
          {!ended ? (
            <button type="button" className="danger" onClick={cancel} disabled={!evaluation || cancelPending}>
              {cancelPending ? "Cancelling…" : "Cancel"}
            </button>
          ) : null}
          <a className="button secondary" href={routeHref({ page: "new", from: id })}>
            Edit and run again
          </a>
        </div>
      </header>
      <ProblemBanner problem={problem} onDismiss={() => setProblem(undefined)} />
      {unavailable ? (
        <p>
          <a href={routeHref({ page: "evaluations" })}>Back to your evaluations</a>
        </p>
      ) : null}
      {evaluation ? (
        <>
          <StateTimeline evaluation={evaluation} />
          <StageBreakdown evaluation={evaluation} />
          <EvaluationFacts evaluation={evaluation} />
        </>
      ) : connection.kind !== "failed" ? (
        <p className="muted">Loading…</p>
      ) : null}
      <div className="outputs" hidden={unavailable}>
        <OutputView
          name="stdout"
          label="Standard output"
          text={stdout.text}
          byteCount={stdout.length}
          truncated={result?.stdoutTruncated ?? false}
          limit={limit}
          ended={ended}
          onDownload={() => downloadBytes(stdout.bytes(), `${id}.stdout`)}
        />
        <OutputView
          name="stderr"
          label="Standard error"
          text={stderr.text}
          byteCount={stderr.length}
          truncated={result?.stderrTruncated ?? false}
          limit={limit}
          ended={ended}
          onDownload={() => downloadBytes(stderr.bytes(), `${id}.stderr`)}
        />
      </div>
      {unavailable ? null : <CodePanel id={id} />}
    </article>
  );
}
