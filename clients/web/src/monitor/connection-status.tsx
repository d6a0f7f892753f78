import type { Connection } from "./follow-evaluation";

function words(connection: Connection): string {
  switch (connection.kind) {
    case "connecting":
      return "connecting…";
    case "live":
      return "live";
    case "retrying":
      return `connection lost; reconnecting in ${(connection.delayMs / 1000).toFixed(1)} s (try ${connection.retry})`;
    case "ended":
      return "finished";
    case "failed":
      return connection.problem.message;
  }
}

/** ConnectionStatus says whether the monitor is receiving live events. */
export function ConnectionStatus({ connection }: { connection: Connection }) {
  return (
    <span className={`connection connection-${connection.kind}`} data-testid="connection" role="status">
      <span className="connection-dot" aria-hidden="true" />
      {words(connection)}
    </span>
  );
}
