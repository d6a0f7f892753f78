/**
 * The steps of one evaluation's life, as the monitor's timeline shows them: queued (with its place
 * in the queue and the estimated start), running (attempt and executor), and the terminal state
 * with its cause and who was at fault.
 */
import {
  Evaluation_State as State,
  Fault,
  TerminationCause as Cause,
  type Evaluation,
} from "@evalmesh/proto/evalmesh/v1/evaluation_pb";

import {
  CAUSE_NAMES,
  FAULT_NAMES,
  STATE_NAMES,
  formatRelative,
  formatSeconds,
  isTerminal,
  signalName,
  stateTone,
  toDate,
} from "../format";

export type StepStatus = "done" | "current" | "pending" | "skipped";

export interface TimelineStep {
  key: "queued" | "running" | "ended";
  title: string;
  status: StepStatus;
  tone: "ok" | "bad" | "neutral" | "active";
  time?: Date;
  details: string[];
}

function span(from: Date | undefined, to: Date | undefined): string {
  return from && to ? formatSeconds(Math.max(0, (to.getTime() - from.getTime()) / 1000)) : "";
}

function queuedDetails(evaluation: Evaluation, now: Date): string[] {
  if (evaluation.state !== State.QUEUED) {
    const waited = span(toDate(evaluation.createTime), toDate(evaluation.startTime));
    return waited ? [`waited ${waited}`] : [];
  }
  const details: string[] = [];
  const position = evaluation.queuePosition;
  if (position !== undefined) {
    details.push(
      position === 0n ? "next to start" : `${position} ${position === 1n ? "evaluation" : "evaluations"} ahead`,
    );
  }
  const estimate = toDate(evaluation.estimatedStartTime);
  if (estimate) {
    details.push(estimate > now ? `estimated start ${formatRelative(estimate, now)}` : "should start any moment");
  }
  if (evaluation.attempt > 0) details.push(`retrying after a platform fault (attempt ${evaluation.attempt + 1} next)`);
  return details;
}

function runningDetails(evaluation: Evaluation): string[] {
  const details: string[] = [];
  const ran = isTerminal(evaluation.state) ? span(toDate(evaluation.startTime), toDate(evaluation.endTime)) : "";
  if (ran) details.push(`ran ${ran}`);
  if (evaluation.attempt > 0) {
    const earlier = evaluation.attempt - 1;
    details.push(
      earlier > 0
        ? `attempt ${evaluation.attempt} (${earlier} lost to platform faults)`
        : `attempt ${evaluation.attempt}`,
    );
  }
  if (evaluation.executorId) details.push(`on ${evaluation.executorId}`);
  if (evaluation.cancelRequested && evaluation.state === State.RUNNING) details.push("cancel requested; stopping");
  return details;
}

/** causeText says in words how the program ended: "exited with code 1", "killed by signal 9 (SIGKILL)". */
export function causeText(evaluation: Evaluation): string {
  const result = evaluation.result;
  if (!result) return "";
  if (result.cause === Cause.EXITED && result.exitCode !== undefined) return `exited with code ${result.exitCode}`;
  if (result.cause === Cause.SIGNALED && result.signal !== undefined)
    return `killed by signal ${signalName(result.signal)}`;
  return CAUSE_NAMES[result.cause];
}

function endedDetails(evaluation: Evaluation): string[] {
  const result = evaluation.result;
  if (!result) return [];
  const details = [causeText(evaluation)];
  // A cancel is a client's choice, not a fault of the program: the fault line would mislead.
  const blame = result.fault !== Fault.UNSPECIFIED && result.fault !== Fault.NONE && result.cause !== Cause.CANCELLED;
  if (blame) details.push(`caused by ${FAULT_NAMES[result.fault]}`);
  if (result.detail) details.push(result.detail);
  const seen = new Set<string>();
  return details.filter((detail) => {
    const key = detail.toLowerCase();
    if (!detail || seen.has(key)) return false;
    seen.add(key);
    return true;
  });
}

/** timelineSteps returns the three steps of ``evaluation`` as of ``now``. */
export function timelineSteps(evaluation: Evaluation, now: Date = new Date()): TimelineStep[] {
  const state = evaluation.state;
  const ended = isTerminal(state);
  const started = toDate(evaluation.startTime);
  const queued: TimelineStep = {
    key: "queued",
    title: "Queued",
    status: state === State.QUEUED ? "current" : "done",
    tone: state === State.QUEUED ? "active" : "neutral",
    time: toDate(evaluation.createTime),
    details: queuedDetails(evaluation, now),
  };
  const running: TimelineStep = {
    key: "running",
    title: "Running",
    status: state === State.RUNNING ? "current" : ended ? (started ? "done" : "skipped") : "pending",
    tone: state === State.RUNNING ? "active" : "neutral",
    time: started,
    details: ended && !started ? ["never started"] : runningDetails(evaluation),
  };
  const last: TimelineStep = {
    key: "ended",
    title: ended ? STATE_NAMES[state] : "Finished",
    status: ended ? "done" : "pending",
    tone: ended ? stateTone(state) : "neutral",
    time: toDate(evaluation.endTime),
    details: ended ? endedDetails(evaluation) : [],
  };
  return [queued, running, last];
}
