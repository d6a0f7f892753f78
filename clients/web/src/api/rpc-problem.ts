/** Turns any error from a call into words for people, plus the field violations it carries. */
import { Code, ConnectError } from "@connectrpc/connect";

import { errorReason, fieldViolations, type FieldViolation } from "./rpc-error-details";

/** RpcProblem is what the UI shows about a failed call. */
export interface RpcProblem {
  code: Code;
  /** message is a sentence for people. */
  message: string;
  /** reason is the server's stable ErrorInfo reason, "" without one. */
  reason: string;
  violations: FieldViolation[];
}

const WORDS: Partial<Record<Code, string>> = {
  [Code.Unauthenticated]: "The API key was not accepted.",
  [Code.PermissionDenied]: "This needs an admin API key.",
  [Code.NotFound]: "Not found (or it belongs to another tenant).",
  [Code.ResourceExhausted]: "Too many requests right now; try again in a moment.",
  [Code.Unavailable]: "The service is unreachable; retrying may help.",
  [Code.DeadlineExceeded]: "The service took too long to answer.",
  [Code.InvalidArgument]: "Some values are not accepted.",
  [Code.AlreadyExists]: "That request id was already used for a different evaluation.",
  [Code.FailedPrecondition]: "The request cannot be done in the current state.",
};

/** toProblem describes an error thrown by a client call. */
export function toProblem(error: unknown): RpcProblem {
  const connect = ConnectError.from(error);
  const words = WORDS[connect.code];
  const detail = connect.rawMessage.trim();
  return {
    code: connect.code,
    message: words
      ? detail && connect.code !== Code.InvalidArgument
        ? `${words} (${detail})`
        : words
      : detail || "The call failed.",
    reason: errorReason(connect),
    violations: fieldViolations(connect),
  };
}

/** isAbort says whether an error only reports that we cancelled the call ourselves. */
export function isAbort(error: unknown): boolean {
  if (error instanceof DOMException && error.name === "AbortError") return true;
  return error instanceof ConnectError && error.code === Code.Canceled;
}
