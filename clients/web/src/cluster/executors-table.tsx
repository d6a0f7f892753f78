import type { Executor } from "@evalmesh/proto/evalmesh/v1/cluster_pb";

import { formatRelative, toDate } from "../format";

/** ExecutorsTable shows each executor instance with its slot use and health. */
export function ExecutorsTable({ executors, now }: { executors: readonly Executor[]; now: Date }) {
  if (executors.length === 0) return <p className="empty">No executor instance is reporting.</p>;
  return (
    <div className="table-scroll">
      <table>
        <thead>
          <tr>
            <th scope="col">Instance</th>
            <th scope="col">Backend</th>
            <th scope="col">Slots in use</th>
            <th scope="col">Runtimes</th>
            <th scope="col">Health</th>
            <th scope="col">Heartbeat</th>
            <th scope="col">Completed</th>
          </tr>
        </thead>
        <tbody>
          {executors.map((executor) => {
            const heartbeat = toDate(executor.heartbeatTime);
            return (
              <tr key={executor.id} data-testid="executor-row">
                <td>
                  <code>{executor.id}</code>
                  <div className="muted">{executor.host}</div>
                </td>
                <td>{executor.backend}</td>
                <td>
                  <meter
                    min={0}
                    max={Math.max(1, executor.slots)}
                    value={executor.busySlots}
                    aria-label={`${executor.busySlots} of ${executor.slots} slots busy`}
                  />{" "}
                  {executor.busySlots} / {executor.slots}
                </td>
                <td>{executor.runtimes.join(", ")}</td>
                <td>
                  {executor.healthy ? (
                    <span className="badge badge-ok">healthy</span>
                  ) : (
                    <span className="badge badge-bad" title={executor.unhealthyReason}>
                      unhealthy: {executor.unhealthyReason || "no reason given"}
                    </span>
                  )}
                </td>
                <td>{heartbeat ? formatRelative(heartbeat, now) : "–"}</td>
                <td>{executor.completed.toString()}</td>
              </tr>
            );
          })}
        </tbody>
      </table>
    </div>
  );
}
