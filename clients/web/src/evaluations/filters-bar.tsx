import type { Evaluation_State as State } from "@evalmesh/proto/evalmesh/v1/evaluation_pb";

import { PRIORITIES_IN_ORDER, PRIORITY_NAMES, STATE_NAMES, STATES_IN_ORDER } from "../format";
import { NO_FILTERS, TIME_PRESETS, withTimePreset, type ListFilters, type TimePreset } from "./list-filters";

/** toLocalInput renders an ISO instant for a datetime-local input. */
function toLocalInput(iso: string): string {
  if (!iso) return "";
  const date = new Date(iso);
  const local = new Date(date.getTime() - date.getTimezoneOffset() * 60_000);
  return local.toISOString().slice(0, 16);
}

function fromLocalInput(value: string): string {
  return value ? new Date(value).toISOString() : "";
}

export interface FiltersBarProps {
  filters: ListFilters;
  onChange: (filters: ListFilters) => void;
}

/** FiltersBar edits the list's filters: states, priority, labels and creation time. */
export function FiltersBar({ filters, onChange }: FiltersBarProps) {
  const toggle = (state: State) => {
    const states = filters.states.includes(state)
      ? filters.states.filter((item) => item !== state)
      : [...filters.states, state];
    onChange({ ...filters, states });
  };
  return (
    <div className="filters" role="search" aria-label="Filter evaluations">
      <fieldset className="state-filter">
        <legend>State</legend>
        {STATES_IN_ORDER.map((state) => (
          <label key={state} className="check-chip">
            <input type="checkbox" checked={filters.states.includes(state)} onChange={() => toggle(state)} />
            {STATE_NAMES[state]}
          </label>
        ))}
      </fieldset>
      <div className="filter-row">
        <div className="field">
          <label htmlFor="filter-priority">Priority</label>
          <select
            id="filter-priority"
            value={filters.priority ?? ""}
            onChange={(event) =>
              onChange({
                ...filters,
                priority: PRIORITIES_IN_ORDER.find((priority) => String(priority) === event.target.value),
              })
            }
          >
            <option value="">Any</option>
            {PRIORITIES_IN_ORDER.map((priority) => (
              <option key={priority} value={priority}>
                {PRIORITY_NAMES[priority]}
              </option>
            ))}
          </select>
        </div>
        <div className="field">
          <label htmlFor="filter-labels">Labels</label>
          <input
            id="filter-labels"
            placeholder="team=ml"
            spellCheck={false}
            value={filters.labels}
            onChange={(event) => onChange({ ...filters, labels: event.target.value })}
          />
        </div>
        <div className="field">
          <label htmlFor="filter-time">Created</label>
          <select
            id="filter-time"
            value={filters.time}
            onChange={(event) => onChange(withTimePreset(filters, event.target.value as TimePreset))}
          >
            {TIME_PRESETS.map((preset) => (
              <option key={preset.value} value={preset.value}>
                {preset.label}
              </option>
            ))}
          </select>
        </div>
        {filters.time === "custom" ? (
          <>
            <div className="field">
              <label htmlFor="filter-after">From</label>
              <input
                id="filter-after"
                type="datetime-local"
                value={toLocalInput(filters.after)}
                onChange={(event) => onChange({ ...filters, after: fromLocalInput(event.target.value) })}
              />
            </div>
            <div className="field">
              <label htmlFor="filter-before">Until</label>
              <input
                id="filter-before"
                type="datetime-local"
                value={toLocalInput(filters.before)}
                onChange={(event) => onChange({ ...filters, before: fromLocalInput(event.target.value) })}
              />
            </div>
          </>
        ) : null}
        <button type="button" className="secondary" onClick={() => onChange(NO_FILTERS)}>
          Clear filters
        </button>
      </div>
    </div>
  );
}
