import type { DeadLetter, Executor, QueueActivity, QueueStats } from "@evalmesh/proto/evalmesh/v1/cluster_pb";
import type { Evaluation } from "@evalmesh/proto/evalmesh/v1/evaluation_pb";
import { useState } from "react";

import { cluster, evaluations, toProblem, type RpcProblem } from "../api";
import {
  FAILURE_STATES,
  PRIORITY_NAMES,
  STATE_NAMES,
  formatAge,
  formatDuration,
  formatRelative,
  formatSeconds,
  toDate,
} from "../format";
import { measuredDelay, usePollLoop } from "../evaluations";
import { causeText } from "../monitor";
import { routeHref } from "../routing";
import { useSession } from "../session";
import { ProblemBanner, StateBadge, useNow } from "../ui";
import { activityPoints, activitySummary, formatWindow } from "./activity";
import { ActivityChart } from "./activity-chart";
import { ExecutorsTable } from "./executors-table";
import { QueueChart } from "./queue-chart";
import { HISTORY_WINDOW_MS, addSample, sampleOf, type QueueSample } from "./queue-history";

interface Live {
  stats?: QueueStats;
  executors: Executor[];
}

interface Slow {
  deadLetters: DeadLetter[];
  failures: Evaluation[];
  activity?: QueueActivity;
}

function Tile({ label, value, testId }: { label: string; value: string; testId?: string }) {
  return (
    <div className="tile">
      <div className="tile-value" data-testid={testId}>
        {value}
      </div>
      <div className="tile-label">{label}</div>
    </div>
  );
}

/** LastHour is the server's record of the window (every tenant's evaluations, from storage). */
function LastHour({ activity }: { activity: QueueActivity }) {
  const summary = activitySummary(activity);
  const waits = summary.waits;
  const wait = (seconds: number | undefined) => (seconds === undefined ? "–" : formatSeconds(seconds));
  return (
    <section className="card" aria-labelledby="activity-title">
      <h2 id="activity-title">
        Last {summary.windowSeconds === 3600 ? "hour" : formatWindow(summary.windowSeconds)}, from the server
      </h2>
      <section className="tiles" aria-label="Throughput and queue wait">
        <Tile label="completed" value={String(summary.completed)} testId="tile-hour-completed" />
        <Tile label="completed per minute" value={summary.perMinute.toFixed(1)} testId="tile-hour-rate" />
        <Tile label="queue wait p50" value={wait(waits?.p50)} testId="tile-wait-p50" />
        <Tile label="queue wait p90" value={wait(waits?.p90)} testId="tile-wait-p90" />
        <Tile label="queue wait p99" value={wait(waits?.p99)} testId="tile-wait-p99" />
        <Tile label="longest wait" value={wait(waits?.max)} testId="tile-wait-max" />
      </section>
      <ActivityChart points={activityPoints(activity)} windowSeconds={summary.windowSeconds} />
      <p className="muted">
        {summary.started} started and {summary.completed} ended in this window, across every tenant.
        {summary.partial && waits ? ` Waits are of the latest ${waits.count} starts.` : ""}
      </p>
    </section>
  );
}

/** ClusterPage is the admins' dashboard: queue, throughput, executors, failures and dead letters. */
export function ClusterPage() {
  const { session } = useSession();
  const admin = session.status === "signed-in" && session.admin;
  const [history, setHistory] = useState<QueueSample[]>([]);
  const [redrive, setRedrive] = useState<{ message: string } | RpcProblem>();
  const now = useNow(2000);

  const live = usePollLoop<Live>(
    admin ? "live" : "off",
    async (signal) => {
      if (!admin) return { executors: [] };
      const [stats, pool] = await Promise.all([
        cluster.getQueueStats({}, { signal }),
        cluster.listExecutors({}, { signal }),
      ]);
      if (stats.stats) {
        const sample = sampleOf(stats.stats);
        setHistory((current) => addSample(current, sample));
      }
      return { stats: stats.stats, executors: pool.executors };
    },
    (round) => measuredDelay(round.elapsedMs, true, round.failures),
  );
  const slow = usePollLoop<Slow>(
    admin ? "slow" : "off",
    async (signal) => {
      if (!admin) return { deadLetters: [], failures: [] };
      const [dead, failed, activity] = await Promise.all([
        cluster.listDeadLetters({ pageSize: 20 }, { signal }),
        evaluations.listEvaluations({ pageSize: 10, states: [...FAILURE_STATES] }, { signal }),
        cluster.getQueueActivity({}, { signal }),
      ]);
      return { deadLetters: dead.deadLetters, failures: failed.evaluations, activity: activity.activity };
    },
    (round) => (round.failures > 0 ? measuredDelay(0, true, round.failures) : 10_000),
  );

  if (!admin) {
    return (
      <div className="page">
        <h1>Cluster</h1>
        <p className="banner">The cluster dashboard needs an admin API key.</p>
      </div>
    );
  }

  const stats = live.data?.stats;
  const executors = live.data?.executors ?? [];
  const queued = stats?.priorities.reduce((sum, entry) => sum + Number(entry.depth), 0);
  const slots = executors.reduce((sum, executor) => sum + executor.slots, 0);
  const busy = executors.reduce((sum, executor) => sum + executor.busySlots, 0);
  const oldest = stats?.priorities
    .filter((entry) => entry.oldestWait && entry.depth > 0n)
    .map((entry) => `${PRIORITY_NAMES[entry.priority]} ${formatDuration(entry.oldestWait)}`)
    .join(", ");

  const redriveOne = (letter: DeadLetter) => {
    cluster.redriveDeadLetter({ sequence: letter.sequence }).then(
      (reply) => {
        setRedrive({ message: `Queued again as ${reply.evaluation?.id ?? "a new evaluation"}.` });
        slow.refresh();
      },
      (error: unknown) => setRedrive(toProblem(error)),
    );
  };

  return (
    <div className="page cluster">
      <header className="page-header">
        <h1>Cluster</h1>
        <span className="muted" data-testid="cluster-updated">
          {live.updatedAt ? `Updated ${formatAge(live.updatedAt, now)}` : "Loading…"}
        </span>
      </header>
      {live.error ? <ProblemBanner problem={toProblem(live.error)} /> : null}
      <section className="tiles" aria-label="Summary">
        <Tile label="queued" value={queued === undefined ? "–" : String(queued)} testId="tile-queued" />
        <Tile label="running" value={stats ? stats.running.toString() : "–"} testId="tile-running" />
        <Tile
          label="completed per minute"
          value={stats ? stats.completedPerMinute.toFixed(1) : "–"}
          testId="tile-throughput"
        />
        <Tile label={`slots busy (${executors.length} executors)`} value={`${busy} / ${slots}`} testId="tile-slots" />
        <Tile label="dead letters" value={stats ? stats.deadLetters.toString() : "–"} testId="tile-dead-letters" />
      </section>
      <section className="card" aria-labelledby="queue-title">
        <h2 id="queue-title">Queue depth per priority</h2>
        <QueueChart samples={history} maxSpanMs={HISTORY_WINDOW_MS} />
        {oldest ? <p className="muted">Oldest waiting: {oldest}</p> : null}
        {stats && stats.stateCounts.length > 0 ? (
          <p className="muted state-counts">
            {stats.stateCounts
              .filter((entry) => entry.count > 0n)
              .map((entry) => `${STATE_NAMES[entry.state]} ${entry.count}`)
              .join(" · ")}
          </p>
        ) : null}
      </section>
      {slow.data?.activity ? <LastHour activity={slow.data.activity} /> : null}
      <section className="card" aria-labelledby="executors-title">
        <h2 id="executors-title">Executors</h2>
        <ExecutorsTable executors={executors} now={now} />
      </section>
      <div className="two-columns">
        <section className="card" aria-labelledby="failures-title">
          <h2 id="failures-title">Recent failures (your tenant)</h2>
          {slow.error ? <ProblemBanner problem={toProblem(slow.error)} /> : null}
          {slow.data && slow.data.failures.length === 0 ? <p className="empty">No failures.</p> : null}
          <ul className="plain-list">
            {slow.data?.failures.map((evaluation) => (
              <li key={evaluation.id}>
                <a href={routeHref({ page: "evaluation", id: evaluation.id })}>
                  <code>{evaluation.id}</code>
                </a>{" "}
                <StateBadge state={evaluation.state} /> <span className="muted">{causeText(evaluation)}</span>
                {toDate(evaluation.endTime) ? (
                  <span className="muted"> · {formatRelative(toDate(evaluation.endTime) ?? now, now)}</span>
                ) : null}
              </li>
            ))}
          </ul>
        </section>
        <section className="card" aria-labelledby="dead-title">
          <h2 id="dead-title">Dead letters</h2>
          {redrive ? (
            <p role="status" className={"code" in redrive ? "banner banner-error" : "banner"}>
              {redrive.message}
            </p>
          ) : null}
          {slow.data && slow.data.deadLetters.length === 0 ? <p className="empty">No dead letters.</p> : null}
          <ul className="plain-list">
            {slow.data?.deadLetters.map((letter) => (
              <li key={letter.sequence.toString()}>
                <code>{letter.evaluationId}</code>{" "}
                <span className="muted">
                  ({letter.tenant}, {PRIORITY_NAMES[letter.priority]}, {letter.deliveries.toString()} deliveries)
                </span>
                <div>{letter.reason}</div>
                <button type="button" className="secondary small" onClick={() => redriveOne(letter)}>
                  Redrive
                </button>
              </li>
            ))}
          </ul>
        </section>
      </div>
    </div>
  );
}
