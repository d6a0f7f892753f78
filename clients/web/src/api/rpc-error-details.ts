/**
 * TEMPORARY: reads google.rpc.BadRequest and google.rpc.ErrorInfo by hand.
 *
 * gen/ts has no google.rpc types yet (no npm package ships them as @bufbuild/protobuf v2
 * descriptors, and the BSR is out of reach). Once buf generates google/rpc/error_details.proto
 * into gen/ts, delete this file and use `error.findDetails(BadRequestSchema)` and
 * `error.findDetails(ErrorInfoSchema)` instead. Only the fields the UI shows are read; every other
 * field is skipped by its wire type, so newer server fields cannot break it.
 */
import type { ConnectError } from "@connectrpc/connect";
import { BinaryReader, WireType } from "@bufbuild/protobuf/wire";

/** FieldViolation is one google.rpc.BadRequest.FieldViolation: which field, and what is wrong. */
export interface FieldViolation {
  field: string;
  description: string;
}

const BAD_REQUEST = "google.rpc.BadRequest";
const ERROR_INFO = "google.rpc.ErrorInfo";

/** Calls ``onField`` for every field of a message; unknown fields are skipped. */
function readFields(
  bytes: Uint8Array,
  onField: (reader: BinaryReader, field: number, wire: WireType) => boolean,
): void {
  const reader = new BinaryReader(bytes);
  while (reader.pos < reader.len) {
    const [field, wire] = reader.tag();
    if (!onField(reader, field, wire)) reader.skip(wire, field);
  }
}

function readViolation(bytes: Uint8Array): FieldViolation {
  const violation: FieldViolation = { field: "", description: "" };
  readFields(bytes, (reader, field, wire) => {
    if (wire !== WireType.LengthDelimited) return false;
    if (field === 1) violation.field = reader.string();
    else if (field === 2) violation.description = reader.string();
    else return false;
    return true;
  });
  return violation;
}

/** decodeBadRequest reads the field violations (field 1) of an encoded google.rpc.BadRequest. */
export function decodeBadRequest(bytes: Uint8Array): FieldViolation[] {
  const violations: FieldViolation[] = [];
  readFields(bytes, (reader, field, wire) => {
    if (field !== 1 || wire !== WireType.LengthDelimited) return false;
    violations.push(readViolation(reader.bytes()));
    return true;
  });
  return violations;
}

/** decodeErrorInfoReason reads the reason (field 1) of an encoded google.rpc.ErrorInfo. */
export function decodeErrorInfoReason(bytes: Uint8Array): string {
  let reason = "";
  readFields(bytes, (reader, field, wire) => {
    if (field !== 1 || wire !== WireType.LengthDelimited) return false;
    reason = reader.string();
    return true;
  });
  return reason;
}

function rawDetails(error: ConnectError, type: string): Uint8Array[] {
  return error.details.flatMap((detail) => ("type" in detail && detail.type === type ? [detail.value] : []));
}

/** fieldViolations returns every field violation an error carries; none when it carries none. */
export function fieldViolations(error: ConnectError): FieldViolation[] {
  try {
    return rawDetails(error, BAD_REQUEST).flatMap(decodeBadRequest);
  } catch {
    return []; // a malformed detail is ignored; the error message still says what went wrong
  }
}

/** errorReason returns the ErrorInfo reason of an error, or "" without one. */
export function errorReason(error: ConnectError): string {
  try {
    return rawDetails(error, ERROR_INFO).map(decodeErrorInfoReason).find(Boolean) ?? "";
  } catch {
    return "";
  }
}
