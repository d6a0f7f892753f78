import type { Evaluation } from "@evalmesh/proto/evalmesh/v1/evaluation_pb";

import { formatClock, formatSeconds, isTerminal } from "../format";
import { useNow } from "../ui";
import { stageBreakdown, totalSeconds, type Stage } from "./stage-breakdown";

/** A stage's length for people; below a millisecond says so rather than "0 ms". */
export function stageSpan(seconds: number): string {
  return seconds > 0 && seconds < 0.001 ? "< 1 ms" : formatSeconds(seconds);
}

function share(stage: Stage, total: number): string {
  return total > 0 ? `${Math.round((stage.seconds / total) * 100)} %` : "";
}

/** StageBreakdown shows where an evaluation's time went: one bar, one line per recorded stage. */
export function StageBreakdown({ evaluation }: { evaluation: Evaluation }) {
  const now = useNow(1000, !isTerminal(evaluation.state));
  const stages = stageBreakdown(evaluation, now);
  if (stages.length === 0) return null;
  const total = totalSeconds(stages);
  const summary = stages.map((stage) => `${stage.title} ${stageSpan(stage.seconds)}`).join(", ");
  return (
    <section className="stages" aria-labelledby="stages-title" data-testid="stage-breakdown">
      <h2 id="stages-title">
        Where the time went <span className="muted">{stageSpan(total)}</span>
      </h2>
      <div className="stage-bar" role="img" aria-label={summary}>
        {stages.map((stage) => (
          <span
            key={stage.key}
            className={`stage-segment stage-${stage.key}${stage.ongoing ? " stage-ongoing" : ""}`}
            style={{ flexGrow: stage.seconds }}
            title={`${stage.title}: ${stageSpan(stage.seconds)}`}
          />
        ))}
      </div>
      <ol className="stage-list">
        {stages.map((stage) => (
          <li key={stage.key} data-testid={`stage-${stage.key}`}>
            <span className={`stage-swatch stage-${stage.key}`} aria-hidden="true" />
            <strong>{stage.title}</strong>{" "}
            <span className="stage-span">
              {stageSpan(stage.seconds)}
              {stage.ongoing ? " so far" : ""}
            </span>{" "}
            <span className="muted">
              {share(stage, total)} · {stage.meaning} · from {formatClock(stage.from, now)}
            </span>
          </li>
        ))}
      </ol>
    </section>
  );
}
