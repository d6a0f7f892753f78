import { TerminationCause as Cause, type Evaluation } from "@evalmesh/proto/evalmesh/v1/evaluation_pb";
import type { ReactNode } from "react";

import { PRIORITY_NAMES, formatBytes, formatDuration, formatLabels, isTerminal, signalName } from "../format";

function exitText(evaluation: Evaluation): string {
  const result = evaluation.result;
  if (!result || !isTerminal(evaluation.state)) return "–";
  if (result.signal !== undefined) return `signal ${signalName(result.signal)}`;
  if (result.exitCode !== undefined) return `exit code ${result.exitCode}`;
  return result.cause === Cause.CANCELLED ? "cancelled before it ran" : "–";
}

function Fact({
  term,
  children,
  testId,
  wide,
}: {
  term: string;
  children: ReactNode;
  testId?: string;
  wide?: boolean;
}) {
  return (
    <div className={wide ? "fact fact-wide" : "fact"}>
      <dt>{term}</dt>
      <dd data-testid={testId}>{children}</dd>
    </div>
  );
}

/** EvaluationFacts lists what the run measured and what it ran with. */
export function EvaluationFacts({ evaluation }: { evaluation: Evaluation }) {
  const result = evaluation.result;
  const limits = evaluation.appliedLimits;
  const spec = evaluation.spec;
  const digest = evaluation.runtimeDigest;
  return (
    <dl className="facts">
      <Fact term="Exit" testId="fact-exit">
        {exitText(evaluation)}
      </Fact>
      <Fact term="Wall time" testId="fact-wall">
        {formatDuration(result?.wallTime)}
      </Fact>
      <Fact term="CPU time" testId="fact-cpu">
        {formatDuration(result?.cpuTime)}
      </Fact>
      <Fact term="Peak memory" testId="fact-memory">
        {result && isTerminal(evaluation.state) ? formatBytes(result.peakMemoryBytes) : "–"}
      </Fact>
      <Fact term="Runtime" testId="fact-runtime">
        {evaluation.runtime || spec?.runtime || "–"}
      </Fact>
      <Fact term="Runtime digest" wide>
        {digest ? (
          <code className="digest" title={digest}>
            {digest.length > 44 ? `${digest.slice(0, 44)}…` : digest}
          </code>
        ) : (
          "–"
        )}
      </Fact>
      <Fact term="Attempts" testId="fact-attempts">
        {evaluation.attempt}
      </Fact>
      <Fact term="Priority">{spec ? PRIORITY_NAMES[spec.priority] : "–"}</Fact>
      <Fact term="Limits" wide>
        {limits
          ? `${formatDuration(limits.wallTimeout)} · ${formatBytes(limits.memoryBytes)} memory · ${formatBytes(limits.maxOutputBytes)} output · ${limits.maxProcesses} processes`
          : "–"}
      </Fact>
      <Fact term="Labels">{spec && Object.keys(spec.labels).length > 0 ? formatLabels(spec.labels) : "–"}</Fact>
    </dl>
  );
}
