export { formatBytes } from "./bytes";
export { durationSeconds, formatDuration, formatSeconds } from "./duration";
export {
  CAUSE_NAMES,
  FAILURE_STATES,
  FAULT_NAMES,
  PRIORITIES_IN_ORDER,
  PRIORITY_NAMES,
  STATE_NAMES,
  STATES_IN_ORDER,
  isTerminal,
  signalName,
  stateTone,
} from "./enum-names";
export { formatLabels, parseLabels, type ParsedLabels } from "./labels";
export { formatAge, formatClock, formatRelative, toDate } from "./time";
