import type { Evaluation } from "@evalmesh/proto/evalmesh/v1/evaluation_pb";

import {
  PRIORITY_NAMES,
  formatClock,
  formatDuration,
  formatLabels,
  formatRelative,
  isTerminal,
  toDate,
} from "../format";
import { causeText } from "../monitor";
import { routeHref } from "../routing";
import { StateBadge } from "../ui";

export interface EvaluationsTableProps {
  rows: Evaluation[];
  selected: ReadonlySet<string>;
  onSelect: (ids: string[], selected: boolean) => void;
  now: Date;
}

/** EvaluationsTable lists evaluations with a checkbox each for batch actions. */
export function EvaluationsTable({ rows, selected, onSelect, now }: EvaluationsTableProps) {
  const ids = rows.map((row) => row.id);
  const all = ids.length > 0 && ids.every((id) => selected.has(id));
  return (
    <div className="table-scroll">
      <table className="evaluations">
        <thead>
          <tr>
            <th scope="col" className="select-cell">
              <input
                type="checkbox"
                aria-label="Select every evaluation on this page"
                checked={all}
                onChange={(event) => onSelect(ids, event.target.checked)}
              />
            </th>
            <th scope="col">Evaluation</th>
            <th scope="col">State</th>
            <th scope="col">Priority</th>
            <th scope="col">Runtime</th>
            <th scope="col">Labels</th>
            <th scope="col">Created</th>
            <th scope="col">Wall time</th>
            <th scope="col">Outcome</th>
          </tr>
        </thead>
        <tbody>
          {rows.map((row) => {
            const created = toDate(row.createTime);
            return (
              <tr key={row.id} data-testid="evaluation-row">
                <td className="select-cell">
                  <input
                    type="checkbox"
                    aria-label={`Select ${row.id}`}
                    checked={selected.has(row.id)}
                    onChange={(event) => onSelect([row.id], event.target.checked)}
                  />
                </td>
                <td>
                  <a href={routeHref({ page: "evaluation", id: row.id })}>
                    <code>{row.id}</code>
                  </a>
                </td>
                <td>
                  <StateBadge state={row.state} />
                </td>
                <td>{row.spec ? PRIORITY_NAMES[row.spec.priority] : "–"}</td>
                <td>{row.runtime || row.spec?.runtime || "–"}</td>
                <td className="labels-cell">{row.spec ? formatLabels(row.spec.labels) : ""}</td>
                <td>
                  {created ? (
                    <time dateTime={created.toISOString()} title={formatClock(created, now)}>
                      {formatRelative(created, now)}
                    </time>
                  ) : (
                    "–"
                  )}
                </td>
                <td>{formatDuration(row.result?.wallTime)}</td>
                <td>
                  {isTerminal(row.state)
                    ? causeText(row)
                    : row.queuePosition !== undefined
                      ? `${row.queuePosition} ahead`
                      : ""}
                </td>
              </tr>
            );
          })}
        </tbody>
      </table>
    </div>
  );
}
