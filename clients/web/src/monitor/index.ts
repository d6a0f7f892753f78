export { EvaluationMonitor } from "./evaluation-monitor";
export { followEvaluation, type Connection, type WatchSink } from "./follow-evaluation";
export { stageBreakdown, type Stage } from "./stage-breakdown";
export { StageBreakdown } from "./stage-breakdown-view";
export { causeText, timelineSteps, type TimelineStep } from "./state-timeline";
export { StateTimeline } from "./state-timeline-view";
