export { EvaluationMonitor } from "./evaluation-monitor";
export { followEvaluation, type Connection, type WatchSink } from "./follow-evaluation";
export { causeText, timelineSteps, type TimelineStep } from "./state-timeline";
export { StateTimeline } from "./state-timeline-view";
