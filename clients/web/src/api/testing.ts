/** Helpers for specs: encode error details the way the gateway sends them. Not used by the app. */
import { create, toBinary } from "@bufbuild/protobuf";
import { AnySchema } from "@bufbuild/protobuf/wkt";
import { ConnectError, type Code } from "@connectrpc/connect";
import { BadRequestSchema, ErrorInfoSchema } from "@evalmesh/proto/google/rpc/error_details_pb";
import { StatusSchema } from "@evalmesh/proto/google/rpc/status_pb";

/** A detail as it travels: the message's full name and its encoded bytes. */
export interface WireDetail {
  type: string;
  value: Uint8Array;
}

/** badRequestBytes encodes a google.rpc.BadRequest with the given (field, description) violations. */
export function badRequestBytes(...violations: readonly (readonly [string, string])[]): Uint8Array {
  return toBinary(
    BadRequestSchema,
    create(BadRequestSchema, {
      fieldViolations: violations.map(([field, description]) => ({ field, description })),
    }),
  );
}

/** errorInfoBytes encodes a google.rpc.ErrorInfo with the given reason and domain. */
export function errorInfoBytes(reason: string, domain = "evalmesh.dev"): Uint8Array {
  return toBinary(ErrorInfoSchema, create(ErrorInfoSchema, { reason, domain }));
}

/** statusBytes encodes a google.rpc.Status whose details are packed as google.protobuf.Any. */
export function statusBytes(code: Code, message: string, details: readonly WireDetail[]): Uint8Array {
  return toBinary(
    StatusSchema,
    create(StatusSchema, {
      code,
      message,
      details: details.map(({ type, value }) => create(AnySchema, { typeUrl: `type.googleapis.com/${type}`, value })),
    }),
  );
}

/** wireError builds a ConnectError as the client builds one from a response carrying details. */
export function wireError(message: string, code: Code, details: readonly WireDetail[]): ConnectError {
  const error = new ConnectError(message, code);
  error.details = details.map(({ type, value }) => ({ type, value }));
  return error;
}
