import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createGrpcWebTransport } from "@connectrpc/connect-web";
import { EvaluationService } from "@evalmesh/proto/evalmesh/v1/evaluation_service_pb";
import { describe, expect, it } from "vitest";

import { isAbort, toProblem } from "./rpc-problem";
import { badRequestBytes, errorInfoBytes, statusBytes, wireError } from "./testing";

function base64(bytes: Uint8Array): string {
  return btoa(String.fromCharCode(...bytes));
}

/** A transport whose server answers every call with a trailers-only gRPC-web error, as Envoy relays one. */
function failingClient(headers: Record<string, string>) {
  const transport = createGrpcWebTransport({
    baseUrl: "http://edge.test",
    fetch: () =>
      Promise.resolve(
        new Response(null, { status: 200, headers: { "content-type": "application/grpc-web+proto", ...headers } }),
      ),
  });
  return createClient(EvaluationService, transport);
}

describe("toProblem", () => {
  it("decodes field violations from grpc-status-details-bin of a real gRPC-web response", async () => {
    const details = statusBytes(Code.InvalidArgument, "invalid request: spec.limits.memory_bytes", [
      { type: "google.rpc.ErrorInfo", value: new Uint8Array() },
      {
        type: "google.rpc.BadRequest",
        value: badRequestBytes([
          "spec.limits.memory_bytes",
          "must be between 16777216 and 4294967296 bytes, got 1048576",
        ]),
      },
    ]);
    const client = failingClient({
      "grpc-status": "3",
      "grpc-message": "invalid%20request%3A%20spec.limits.memory_bytes",
      "grpc-status-details-bin": base64(details),
    });
    const error = await client.createEvaluation({ requestId: "r" }).catch((caught: unknown) => caught);
    expect(toProblem(error)).toEqual({
      code: Code.InvalidArgument,
      message: "Some values are not accepted.",
      reason: "",
      violations: [
        {
          field: "spec.limits.memory_bytes",
          description: "must be between 16777216 and 4294967296 bytes, got 1048576",
        },
      ],
    });
  });

  it("finds the ErrorInfo reason and every violation among several details", () => {
    const problem = toProblem(
      wireError("slow down", Code.ResourceExhausted, [
        { type: "google.rpc.ErrorInfo", value: errorInfoBytes("") },
        { type: "google.rpc.ErrorInfo", value: errorInfoBytes("RATE_LIMITED") },
        {
          type: "google.rpc.BadRequest",
          value: badRequestBytes(["spec.code", "must not be empty"], ["spec.runtime", "must be one of python"]),
        },
        { type: "google.rpc.RetryInfo", value: new Uint8Array() },
      ]),
    );
    expect(problem.reason).toBe("RATE_LIMITED");
    expect(problem.violations).toEqual([
      { field: "spec.code", description: "must not be empty" },
      { field: "spec.runtime", description: "must be one of python" },
    ]);
  });

  it("ignores a malformed detail instead of throwing", () => {
    const problem = toProblem(
      wireError("bad", Code.InvalidArgument, [
        { type: "google.rpc.BadRequest", value: new Uint8Array([0x0a, 0xff]) },
        { type: "google.rpc.BadRequest", value: badRequestBytes(["spec.stdin", "too big"]) },
      ]),
    );
    expect(problem.violations).toEqual([{ field: "spec.stdin", description: "too big" }]);
    expect(problem.reason).toBe("");
  });

  it("puts the status in words and keeps the server's message", () => {
    const problem = toProblem(new ConnectError("scheduler down", Code.Unavailable));
    expect(problem.message).toBe("The service is unreachable; retrying may help. (scheduler down)");
    expect(problem.violations).toEqual([]);
  });

  it("wraps errors that are not ConnectErrors", () => {
    expect(toProblem(new TypeError("Failed to fetch")).message).toContain("Failed to fetch");
  });

  it("recognises our own cancellations", () => {
    expect(isAbort(new ConnectError("aborted", Code.Canceled))).toBe(true);
    expect(isAbort(new ConnectError("x", Code.Internal))).toBe(false);
  });
});
