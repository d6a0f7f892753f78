import type { FieldViolation, RpcProblem } from "../api";

export interface ProblemBannerProps {
  problem: RpcProblem | string | undefined;
  /** violations that no form field shows; listed under the message. */
  unplaced?: FieldViolation[];
  onDismiss?: () => void;
}

/** ProblemBanner says what went wrong with a call, in words, and lists violations no field shows. */
export function ProblemBanner({ problem, unplaced = [], onDismiss }: ProblemBannerProps) {
  if (!problem) return null;
  const message = typeof problem === "string" ? problem : problem.message;
  return (
    <div className="banner banner-error" role="alert">
      <p>{message}</p>
      {unplaced.length > 0 ? (
        <ul>
          {unplaced.map((violation) => (
            <li key={`${violation.field}:${violation.description}`}>
              <code>{violation.field}</code>: {violation.description}
            </li>
          ))}
        </ul>
      ) : null}
      {onDismiss ? (
        <button type="button" className="link-button" onClick={onDismiss}>
          Dismiss
        </button>
      ) : null}
    </div>
  );
}
