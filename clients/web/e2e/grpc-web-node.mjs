// A real gRPC-web client in Node, built from the generated TypeScript, against the Envoy edge:
// unary CreateEvaluation and GetEvaluation, a WatchEvaluation stream that stays open past Envoy's
// default 15 s route timeout, and an error whose google.rpc.BadRequest detail arrives decoded.
// Prints one line per check and "N passed, M failed"; exits non-zero on any failure.
//
// Node cannot load the generated .ts, so bundle this file first (esbuild resolves the
// @evalmesh/proto exports to their .ts sources), then run the bundle:
//
//   npx esbuild clients/web/e2e/grpc-web-node.mjs --bundle --platform=node --format=esm \
//     --outfile=TMP/grpc-web-node.mjs
//   node TMP/grpc-web-node.mjs EDGE_URL API_KEY
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createGrpcWebTransport } from "@connectrpc/connect-web";
import { Evaluation_State, EvaluationView, OutputStream } from "@evalmesh/proto/evalmesh/v1/evaluation_pb";
import { EvaluationService } from "@evalmesh/proto/evalmesh/v1/evaluation_service_pb";
import { BadRequestSchema } from "@evalmesh/proto/google/rpc/error_details_pb";

const [baseUrl, apiKey] = process.argv.slice(2);
if (!baseUrl || !apiKey) {
  process.stderr.write("usage: node grpc-web-node.mjs EDGE_URL API_KEY\n");
  process.exit(2);
}

const LINES = 20;
const WATCHED_CODE = `import time\nfor i in range(${LINES}):\n    print(i, flush=True)\n    time.sleep(1)\n`;
const ROUTE_TIMEOUT_MS = 15_000;

const transport = createGrpcWebTransport({
  baseUrl,
  httpVersion: "1.1",
  interceptors: [
    (next) => (request) => {
      request.header.set("authorization", `Bearer ${apiKey}`);
      return next(request);
    },
  ],
});
const evaluations = createClient(EvaluationService, transport);

const results = [];
const runId = `${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 8)}`;

function check(condition, message) {
  if (!condition) throw new Error(message);
}

async function step(name, body) {
  const started = Date.now();
  try {
    const note = await body();
    results.push(true);
    process.stdout.write(`ok   ${name} (${((Date.now() - started) / 1000).toFixed(1)} s)${note ? `: ${note}` : ""}\n`);
  } catch (error) {
    results.push(false);
    process.stdout.write(`FAIL ${name}: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`);
  }
}

function stateName(state) {
  return Evaluation_State[state] ?? String(state);
}

await step("unary CreateEvaluation and GetEvaluation", async () => {
  const created = await evaluations.createEvaluation(
    { requestId: `grpc-web-node-unary-${runId}`, spec: { code: "print('hello over grpc-web')" } },
    { timeoutMs: 10_000 },
  );
  check(created.created, "CreateEvaluation did not report a new evaluation");
  const id = created.evaluation?.id ?? "";
  check(id !== "", "CreateEvaluation returned no evaluation id");
  const got = await evaluations.getEvaluation({ id, view: EvaluationView.FULL }, { timeoutMs: 10_000 });
  check(got.evaluation?.id === id, `GetEvaluation returned ${got.evaluation?.id ?? "nothing"}, not ${id}`);
  check(got.evaluation.spec?.code.includes("hello over grpc-web"), "GetEvaluation (FULL) lost the code");
  return `${id} ${stateName(got.evaluation.state)}`;
});

await step(`WatchEvaluation stays open past ${ROUTE_TIMEOUT_MS / 1000} s`, async () => {
  const created = await evaluations.createEvaluation(
    {
      requestId: `grpc-web-node-watch-${runId}`,
      spec: { code: WATCHED_CODE, limits: { wallTimeout: { seconds: 120n } } },
    },
    { timeoutMs: 10_000 },
  );
  const id = created.evaluation?.id ?? "";
  check(id !== "", "CreateEvaluation returned no evaluation id");
  const started = Date.now();
  const decoder = new TextDecoder();
  let stdout = "";
  let last;
  for await (const response of evaluations.watchEvaluation({ id }, { timeoutMs: 120_000 })) {
    if (response.event.case === "evaluation") last = response.event.value;
    else if (response.event.case === "output" && response.event.value.stream === OutputStream.STDOUT) {
      stdout += decoder.decode(response.event.value.data, { stream: true });
    }
  }
  const openMs = Date.now() - started;
  check(openMs > ROUTE_TIMEOUT_MS, `the stream ended after only ${openMs} ms`);
  check(last !== undefined, "the stream sent no evaluation snapshot");
  check(
    last.state === Evaluation_State.SUCCEEDED,
    `the last snapshot is ${stateName(last.state)}, not STATE_SUCCEEDED`,
  );
  const expected = Array.from({ length: LINES }, (_, i) => String(i));
  const lines = stdout.split("\n").filter(Boolean);
  check(
    JSON.stringify(lines) === JSON.stringify(expected),
    `stdout has ${lines.length} lines, not 0..${LINES - 1}: ${JSON.stringify(stdout.slice(0, 200))}`,
  );
  return `open ${(openMs / 1000).toFixed(1)} s, ${lines.length} lines, ${stateName(last.state)}`;
});

await step("an invalid request arrives as InvalidArgument with a decoded BadRequest", async () => {
  let caught;
  try {
    await evaluations.createEvaluation(
      { requestId: `grpc-web-node-invalid-${runId}`, spec: { code: "print(1)", limits: { memoryBytes: 1n } } },
      { timeoutMs: 10_000 },
    );
  } catch (error) {
    caught = error;
  }
  check(caught !== undefined, "CreateEvaluation with memory_bytes=1 succeeded");
  const error = ConnectError.from(caught);
  check(error.code === Code.InvalidArgument, `the code is ${Code[error.code]}, not InvalidArgument`);
  const violations = error.findDetails(BadRequestSchema).flatMap((detail) => detail.fieldViolations);
  const memory = violations.find((violation) => violation.field === "spec.limits.memory_bytes");
  check(
    memory !== undefined,
    `no BadRequest violation for spec.limits.memory_bytes among ${JSON.stringify(violations.map((v) => v.field))}`,
  );
  return `${memory.field}: ${memory.description}`;
});

const failed = results.filter((ok) => !ok).length;
process.stdout.write(`${results.length - failed} passed, ${failed} failed\n`);
process.exit(failed ? 1 : 0);
