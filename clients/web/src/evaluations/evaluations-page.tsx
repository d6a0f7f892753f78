import type { ListEvaluationsResponse } from "@evalmesh/proto/evalmesh/v1/evaluation_service_pb";
import { useState } from "react";

import { evaluations, toProblem } from "../api";
import { formatAge, isTerminal } from "../format";
import { routeHref } from "../routing";
import { ProblemBanner, useDebounced, useNow } from "../ui";
import { cancelMany, type BatchOutcome } from "./batch-cancel";
import { EvaluationsTable } from "./evaluations-table";
import { FiltersBar } from "./filters-bar";
import { NO_FILTERS, filtersKey, listRequest, type ListFilters } from "./list-filters";
import { measuredDelay } from "./poll-loop";
import { usePollLoop } from "./use-poll-loop";

/**
 * EvaluationsPage lists the tenant's evaluations with filters and paging. One polling loop keeps
 * the visible page fresh (one ListEvaluations per round, faster while something on it is active).
 */
export function EvaluationsPage() {
  const [filters, setFilters] = useState<ListFilters>(NO_FILTERS);
  const [tokens, setTokens] = useState<string[]>([""]);
  const [selected, setSelected] = useState<ReadonlySet<string>>(new Set());
  const [batch, setBatch] = useState<BatchOutcome & { running: boolean }>();
  const now = useNow(5000);
  const token = tokens[tokens.length - 1] ?? "";
  // Typing in a filter asks once it settles, not once per keystroke.
  const applied = useDebounced(filters, 300);
  const built = listRequest(applied, token);

  const polled = usePollLoop<ListEvaluationsResponse | undefined>(
    `${filtersKey(applied)}|${token}`,
    async (signal) => (built.ok ? evaluations.listEvaluations(built.request, { signal }) : undefined),
    (round) =>
      measuredDelay(
        round.elapsedMs,
        round.result?.evaluations.some((row) => !isTerminal(row.state)) ?? false,
        round.failures,
      ),
  );
  const rows = polled.data?.evaluations ?? [];
  const nextToken = polled.data?.nextPageToken ?? "";

  const changeFilters = (next: ListFilters) => {
    setFilters(next);
    setTokens([""]);
    setSelected(new Set());
  };

  const select = (ids: string[], on: boolean) => {
    setSelected((current) => {
      const next = new Set(current);
      for (const id of ids) {
        if (on) next.add(id);
        else next.delete(id);
      }
      return next;
    });
  };

  const visibleSelected = rows.filter((row) => selected.has(row.id));
  const cancellable = visibleSelected.filter((row) => !isTerminal(row.state)).map((row) => row.id);
  const cancelSelected = () => {
    setBatch({ cancelled: [], failed: [], running: true });
    void cancelMany(evaluations, cancellable).then((outcome) => {
      setBatch({ ...outcome, running: false });
      setSelected(new Set());
      polled.refresh();
    });
  };

  return (
    <div className="page">
      <header className="page-header">
        <h1>Evaluations</h1>
        <a className="button primary" href={routeHref({ page: "new" })}>
          New evaluation
        </a>
      </header>
      <FiltersBar filters={filters} onChange={changeFilters} />
      {built.ok ? null : <ProblemBanner problem={built.error} />}
      {polled.error ? <ProblemBanner problem={toProblem(polled.error)} /> : null}
      <div className="toolbar">
        <button
          type="button"
          className="danger"
          disabled={cancellable.length === 0 || batch?.running}
          onClick={cancelSelected}
        >
          {batch?.running ? "Cancelling…" : `Cancel selected (${cancellable.length})`}
        </button>
        {batch && !batch.running ? (
          <span role="status" className="muted">
            Cancelled {batch.cancelled.length}
            {batch.failed.length > 0
              ? `; ${batch.failed.length} failed: ${batch.failed.map((item) => `${item.id} (${item.message})`).join(", ")}`
              : ""}
          </span>
        ) : null}
        <span className="muted refresh-note" data-testid="refresh-note">
          {polled.updatedAt ? `Updated ${formatAge(polled.updatedAt, now)}` : "Loading…"}
          {polled.delayMs ? ` · next refresh in about ${Math.round(polled.delayMs / 1000)} s` : ""}
        </span>
        <button type="button" className="secondary" onClick={polled.refresh}>
          Refresh
        </button>
      </div>
      {polled.data && rows.length === 0 ? (
        <p className="empty">{tokens.length > 1 ? "No more evaluations." : "No evaluations match these filters."}</p>
      ) : (
        <EvaluationsTable rows={rows} selected={selected} onSelect={select} now={now} />
      )}
      <nav className="pager" aria-label="Pages">
        <button
          type="button"
          className="secondary"
          disabled={tokens.length <= 1}
          onClick={() => setTokens((current) => current.slice(0, -1))}
        >
          ← Newer
        </button>
        <span className="muted">Page {tokens.length}</span>
        <button
          type="button"
          className="secondary"
          disabled={!nextToken}
          onClick={() => setTokens((current) => [...current, nextToken])}
        >
          Older →
        </button>
      </nav>
    </div>
  );
}
