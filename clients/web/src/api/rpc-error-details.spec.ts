import { BinaryWriter, WireType } from "@bufbuild/protobuf/wire";
import { Code, ConnectError } from "@connectrpc/connect";
import { describe, expect, it } from "vitest";

import { decodeBadRequest, errorReason, fieldViolations } from "./rpc-error-details";
import { wireError } from "./testing";

function violation(field: string, description: string, extra = false): Uint8Array {
  const writer = new BinaryWriter().tag(1, WireType.LengthDelimited).string(field);
  writer.tag(2, WireType.LengthDelimited).string(description);
  if (extra) writer.tag(3, WireType.LengthDelimited).string("REASON").tag(9, WireType.Varint).int32(7);
  return writer.finish();
}

function badRequest(...violations: Uint8Array[]): Uint8Array {
  const writer = new BinaryWriter();
  for (const item of violations) writer.tag(1, WireType.LengthDelimited).bytes(item);
  return writer.finish();
}

describe("decodeBadRequest", () => {
  it("reads every field violation with its field and description", () => {
    const bytes = badRequest(
      violation("spec.limits.memory_bytes", "must be between 16777216 and 4294967296 bytes, got 1"),
      violation("spec.code", "must not be empty"),
    );
    expect(decodeBadRequest(bytes)).toEqual([
      { field: "spec.limits.memory_bytes", description: "must be between 16777216 and 4294967296 bytes, got 1" },
      { field: "spec.code", description: "must not be empty" },
    ]);
  });

  it("skips fields it does not know", () => {
    expect(decodeBadRequest(badRequest(violation("spec.stdin", "too big", true)))).toEqual([
      { field: "spec.stdin", description: "too big" },
    ]);
  });
});

describe("reading details from a ConnectError", () => {
  const errorInfo = new BinaryWriter()
    .tag(1, WireType.LengthDelimited)
    .string("RATE_LIMITED")
    .tag(2, WireType.LengthDelimited)
    .string("evalmesh.dev")
    .finish();

  it("finds the BadRequest and ErrorInfo among the details", () => {
    const error = wireError("invalid request", Code.InvalidArgument, [
      { type: "google.rpc.ErrorInfo", value: errorInfo },
      { type: "google.rpc.BadRequest", value: badRequest(violation("spec.runtime", "must be one of python")) },
    ]);
    expect(fieldViolations(error)).toEqual([{ field: "spec.runtime", description: "must be one of python" }]);
    expect(errorReason(error)).toBe("RATE_LIMITED");
  });

  it("ignores a malformed detail instead of throwing", () => {
    const error = wireError("bad", Code.InvalidArgument, [
      { type: "google.rpc.BadRequest", value: new Uint8Array([0x0a, 0xff]) },
    ]);
    expect(fieldViolations(error)).toEqual([]);
    expect(errorReason(new ConnectError("x"))).toBe("");
  });
});
