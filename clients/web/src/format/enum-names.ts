import {
  Evaluation_State as State,
  Fault,
  Priority,
  TerminationCause as Cause,
} from "@evalmesh/proto/evalmesh/v1/evaluation_pb";

/** STATE_NAMES are the words the UI uses for each evaluation state. */
export const STATE_NAMES: Readonly<Record<State, string>> = {
  [State.UNSPECIFIED]: "Unknown",
  [State.QUEUED]: "Queued",
  [State.RUNNING]: "Running",
  [State.SUCCEEDED]: "Succeeded",
  [State.FAILED]: "Failed",
  [State.TIMED_OUT]: "Timed out",
  [State.MEMORY_LIMIT_EXCEEDED]: "Memory limit exceeded",
  [State.OUTPUT_LIMIT_EXCEEDED]: "Output limit exceeded",
  [State.CANCELLED]: "Cancelled",
  [State.ERROR]: "Platform error",
};

/** STATES_IN_ORDER lists every real state, in the order of an evaluation's life. */
export const STATES_IN_ORDER: readonly State[] = [
  State.QUEUED,
  State.RUNNING,
  State.SUCCEEDED,
  State.FAILED,
  State.TIMED_OUT,
  State.MEMORY_LIMIT_EXCEEDED,
  State.OUTPUT_LIMIT_EXCEEDED,
  State.CANCELLED,
  State.ERROR,
];

/** FAILURE_STATES are the terminal states other than success and a user's cancel. */
export const FAILURE_STATES: readonly State[] = [
  State.FAILED,
  State.TIMED_OUT,
  State.MEMORY_LIMIT_EXCEEDED,
  State.OUTPUT_LIMIT_EXCEEDED,
  State.ERROR,
];

export const PRIORITY_NAMES: Readonly<Record<Priority, string>> = {
  [Priority.UNSPECIFIED]: "Normal",
  [Priority.HIGH]: "High",
  [Priority.NORMAL]: "Normal",
  [Priority.LOW]: "Low",
};

/** PRIORITIES_IN_ORDER lists the real priority classes, highest first. */
export const PRIORITIES_IN_ORDER: readonly Priority[] = [Priority.HIGH, Priority.NORMAL, Priority.LOW];

export const FAULT_NAMES: Readonly<Record<Fault, string>> = {
  [Fault.UNSPECIFIED]: "not ended",
  [Fault.NONE]: "no fault",
  [Fault.USER]: "the program (user fault)",
  [Fault.PLATFORM]: "the platform (not your program)",
};

export const CAUSE_NAMES: Readonly<Record<Cause, string>> = {
  [Cause.UNSPECIFIED]: "not ended",
  [Cause.EXITED]: "exited",
  [Cause.SIGNALED]: "killed by a signal",
  [Cause.WALL_TIMEOUT]: "wall-clock limit reached",
  [Cause.MEMORY_LIMIT]: "memory limit reached",
  [Cause.OUTPUT_LIMIT]: "output limit reached",
  [Cause.CANCELLED]: "cancelled by a client",
  [Cause.PLATFORM_ERROR]: "platform error",
  [Cause.MAX_ATTEMPTS]: "every attempt lost to platform faults",
};

const SIGNALS: Readonly<Record<number, string>> = {
  1: "SIGHUP",
  2: "SIGINT",
  3: "SIGQUIT",
  4: "SIGILL",
  5: "SIGTRAP",
  6: "SIGABRT",
  7: "SIGBUS",
  8: "SIGFPE",
  9: "SIGKILL",
  11: "SIGSEGV",
  13: "SIGPIPE",
  14: "SIGALRM",
  15: "SIGTERM",
  24: "SIGXCPU",
  25: "SIGXFSZ",
  31: "SIGSYS",
};

/** signalName renders a signal number with its Linux name when known: "9 (SIGKILL)". */
export function signalName(signal: number): string {
  const name = SIGNALS[signal];
  return name ? `${signal} (${name})` : String(signal);
}

/** isTerminal says whether a state never changes again. */
export function isTerminal(state: State): boolean {
  return state !== State.QUEUED && state !== State.RUNNING && state !== State.UNSPECIFIED;
}

/** stateTone groups states for colour: success, failure, neutral or in progress. */
export function stateTone(state: State): "ok" | "bad" | "neutral" | "active" {
  if (state === State.SUCCEEDED) return "ok";
  if (state === State.CANCELLED || state === State.UNSPECIFIED) return "neutral";
  if (state === State.QUEUED || state === State.RUNNING) return "active";
  return "bad";
}
