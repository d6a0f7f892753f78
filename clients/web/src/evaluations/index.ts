export { cancelMany, type BatchOutcome } from "./batch-cancel";
export { EvaluationsPage } from "./evaluations-page";
export { NO_FILTERS, listRequest, type ListFilters } from "./list-filters";
export { measuredDelay, startPollLoop, type PollLoop, type Round } from "./poll-loop";
export { usePollLoop, type Polled } from "./use-poll-loop";
