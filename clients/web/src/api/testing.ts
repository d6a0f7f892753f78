/** Helpers for specs: encode error details the way the gateway sends them. Not used by the app. */
import { BinaryWriter, WireType } from "@bufbuild/protobuf/wire";
import type { Code } from "@connectrpc/connect";
import { ConnectError } from "@connectrpc/connect";

/** badRequestBytes encodes a google.rpc.BadRequest with the given (field, description) violations. */
export function badRequestBytes(...violations: readonly (readonly [string, string])[]): Uint8Array {
  const writer = new BinaryWriter();
  for (const [field, description] of violations) {
    const item = new BinaryWriter()
      .tag(1, WireType.LengthDelimited)
      .string(field)
      .tag(2, WireType.LengthDelimited)
      .string(description)
      .finish();
    writer.tag(1, WireType.LengthDelimited).bytes(item);
  }
  return writer.finish();
}

/** statusBytes encodes a google.rpc.Status whose details are packed as google.protobuf.Any. */
export function statusBytes(
  code: Code,
  message: string,
  details: readonly { type: string; value: Uint8Array }[],
): Uint8Array {
  const writer = new BinaryWriter()
    .tag(1, WireType.Varint)
    .int32(code)
    .tag(2, WireType.LengthDelimited)
    .string(message);
  for (const detail of details) {
    const any = new BinaryWriter()
      .tag(1, WireType.LengthDelimited)
      .string(`type.googleapis.com/${detail.type}`)
      .tag(2, WireType.LengthDelimited)
      .bytes(detail.value)
      .finish();
    writer.tag(3, WireType.LengthDelimited).bytes(any);
  }
  return writer.finish();
}

/** wireError builds a ConnectError as the client builds one from a response carrying details. */
export function wireError(
  message: string,
  code: Code,
  details: readonly { type: string; value: Uint8Array }[],
): ConnectError {
  const error = new ConnectError(message, code);
  error.details = details.map((detail) => ({ type: detail.type, value: detail.value }));
  return error;
}
