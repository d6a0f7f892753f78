import type { Evaluation } from "@evalmesh/proto/evalmesh/v1/evaluation_pb";

import { formatClock, isTerminal } from "../format";
import { useNow } from "../ui";
import { timelineSteps } from "./state-timeline";

const MARKERS = { done: "✓", current: "●", pending: "○", skipped: "–" } as const;

/** StateTimeline shows queued, running and the end of an evaluation, with what is known of each. */
export function StateTimeline({ evaluation }: { evaluation: Evaluation }) {
  const now = useNow(1000, !isTerminal(evaluation.state));
  const steps = timelineSteps(evaluation, now);
  return (
    <ol className="timeline" aria-label="State timeline">
      {steps.map((step) => (
        <li
          key={step.key}
          className={`timeline-step step-${step.status} tone-${step.tone}`}
          aria-current={step.status === "current" ? "step" : undefined}
          data-testid={`timeline-${step.key}`}
        >
          <span className="timeline-marker" aria-hidden="true">
            {MARKERS[step.status]}
          </span>
          <div>
            <div className="timeline-title">
              <strong>{step.title}</strong>
              {step.time ? <time dateTime={step.time.toISOString()}>{formatClock(step.time, now)}</time> : null}
            </div>
            {step.details.map((detail) => (
              <div key={detail} className="timeline-detail">
                {detail}
              </div>
            ))}
          </div>
        </li>
      ))}
    </ol>
  );
}
