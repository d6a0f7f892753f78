/** Turns any error from a call into words for people, plus the field violations it carries. */
import { Code, ConnectError } from "@connectrpc/connect";
import { BadRequestSchema, ErrorInfoSchema } from "@evalmesh/proto/google/rpc/error_details_pb";

/** FieldViolation is one google.rpc.BadRequest.FieldViolation: which field, and what is wrong. */
export interface FieldViolation {
  field: string;
  description: string;
}

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

/** fieldViolations returns every BadRequest violation an error carries; malformed ones are skipped. */
function fieldViolations(error: ConnectError): FieldViolation[] {
  return error
    .findDetails(BadRequestSchema)
    .flatMap((badRequest) => badRequest.fieldViolations)
    .map(({ field, description }) => ({ field, description }));
}

/** errorReason returns the first non-empty ErrorInfo reason of an error, or "" without one. */
function errorReason(error: ConnectError): string {
  return error.findDetails(ErrorInfoSchema).find((info) => info.reason)?.reason ?? "";
}

/** isAbort says whether an error only reports that we cancelled the call ourselves. */
export function isAbort(error: unknown): boolean {
  if (error instanceof DOMException && error.name === "AbortError") return true;
  return error instanceof ConnectError && error.code === Code.Canceled;
}
