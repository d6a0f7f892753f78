/**
 * Where an evaluation's time went, from the moments the platform records (all on the database's
 * clock): accepted (createTime), claimed by an executor (startTime), its sandbox ready and the
 * program started (runStartTime), the program ended (runEndTime), its output stored
 * (outputStoredTime) and the result recorded (endTime). A stage is shown only between two
 * moments that were recorded: an evaluation that never ran has no "running", and one recorded
 * before the executor reported its moments shows the claim-to-result span as one stage.
 */
import type { Timestamp } from "@bufbuild/protobuf/wkt";
import { Evaluation_State as State, type Evaluation } from "@evalmesh/proto/evalmesh/v1/evaluation_pb";

import { isTerminal, toDate } from "../format";

export type StageKey = "queued" | "preparing" | "running" | "storing" | "recording" | "finishing" | "claimed";

export interface Stage {
  key: StageKey;
  title: string;
  /** what the stage covers, in words */
  meaning: string;
  from: Date;
  to: Date;
  seconds: number;
  /** true while the stage is still going on (its end is "now") */
  ongoing: boolean;
}

const STAGES: Record<StageKey, { title: string; meaning: string }> = {
  queued: { title: "Queued", meaning: "accepted, waiting for an executor slot" },
  preparing: { title: "Sandbox", meaning: "claimed; the sandbox made ready and the code handed over" },
  running: { title: "Running", meaning: "the program ran" },
  storing: { title: "Output", meaning: "the sandbox torn down and the last output stored" },
  recording: { title: "Result", meaning: "the result recorded" },
  finishing: {
    title: "Output and result",
    meaning: "the sandbox torn down; the last output stored together with the result",
  },
  claimed: { title: "Claimed", meaning: "claimed by an executor; the stages inside are known at the end" },
};

/** A recorded moment: a Date to show, and seconds with the microseconds a Date would drop. */
interface Moment {
  date: Date;
  seconds: number;
}

function moment(timestamp: Timestamp | undefined): Moment | undefined {
  const date = toDate(timestamp);
  return date && timestamp ? { date, seconds: Number(timestamp.seconds) + timestamp.nanos / 1e9 } : undefined;
}

function nowMoment(now: Date): Moment {
  return { date: now, seconds: now.getTime() / 1000 };
}

function stage(key: StageKey, from: Moment, to: Moment, ongoing = false): Stage {
  const seconds = Math.max(0, to.seconds - from.seconds);
  return { key, ...STAGES[key], from: from.date, to: to.date, seconds, ongoing };
}

/** The recorded moments, in order, as far as they go. */
function moments(evaluation: Evaluation) {
  return {
    created: moment(evaluation.createTime),
    claimed: moment(evaluation.startTime),
    ready: moment(evaluation.runStartTime),
    ended: moment(evaluation.runEndTime),
    stored: moment(evaluation.outputStoredTime),
    recorded: moment(evaluation.endTime),
  };
}

/** stageBreakdown returns the stages of ``evaluation`` as of ``now``, oldest first. */
export function stageBreakdown(evaluation: Evaluation, now: Date = new Date()): Stage[] {
  const { created, claimed, ready, ended, stored, recorded } = moments(evaluation);
  if (!created) return [];
  const terminal = isTerminal(evaluation.state);
  if (!claimed || evaluation.state === State.QUEUED) {
    // Never claimed (or queued again for a new attempt): all of it was waiting.
    const end = terminal ? recorded : nowMoment(now);
    return end ? [stage("queued", created, end, !terminal)] : [];
  }
  const stages = [stage("queued", created, claimed)];
  if (!terminal) return [...stages, stage("claimed", claimed, nowMoment(now), true)];
  if (!recorded) return stages;
  if (!ready || !ended || !stored) return [...stages, stage("claimed", claimed, recorded)];
  const ran = [...stages, stage("preparing", claimed, ready), stage("running", ready, ended)];
  // Output that travelled with the result was stored in the same write: one stage, not two.
  if (stored.seconds >= recorded.seconds) return [...ran, stage("finishing", ended, recorded)];
  return [...ran, stage("storing", ended, stored), stage("recording", stored, recorded)];
}

/** The total span the stages cover, in seconds. */
export function totalSeconds(stages: Stage[]): number {
  return stages.reduce((sum, item) => sum + item.seconds, 0);
}
