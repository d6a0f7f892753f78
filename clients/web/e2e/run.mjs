#!/usr/bin/env node
// End-to-end tests of the browser UI in real Chromium against the real mesh.
//
// Builds the UI, starts `python -m evalmesh_deploy.local up` on free ports in a temporary state directory
// (the launcher serves clients/web/dist through Envoy on the API's origin), drives Debian's Chromium
// with playwright-core, saves a screenshot of every step under test-artifacts/web-e2e/, and stops the
// mesh with SIGINT by pid. Prints "N passed, M failed" and exits non-zero on any failure.
//
//   node clients/web/e2e/run.mjs [--no-build] [--headed]
//
// Environment: CHROMIUM (default /usr/bin/chromium), EVALMESH_PYTHON (default .venv/bin/python).
import { execFile, spawn, spawnSync } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";

import { chromium } from "playwright-core";

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "../../..");
const ARTIFACTS = join(ROOT, "test-artifacts", "web-e2e");
const CHROMIUM = process.env.CHROMIUM ?? "/usr/bin/chromium";
const PYTHON = process.env.EVALMESH_PYTHON ?? join(ROOT, ".venv", "bin", "python");
const GRPCURL = join(ROOT, ".venv", "bin", "grpcurl");
const args = new Set(process.argv.slice(2));
const run = promisify(execFile);

const results = [];
const consoleErrors = [];

function log(message) {
  process.stdout.write(`e2e: ${message}\n`);
}

async function step(name, body) {
  const started = Date.now();
  try {
    await body();
    results.push({ name, ok: true });
    log(`ok   ${name} (${((Date.now() - started) / 1000).toFixed(1)} s)`);
  } catch (error) {
    results.push({ name, ok: false, error });
    log(`FAIL ${name}: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}`);
  }
}

function check(condition, message) {
  if (!condition) throw new Error(message);
}

function sleep(ms) {
  return new Promise((done) => setTimeout(done, ms));
}

async function until(description, probe, timeoutMs = 30_000, everyMs = 100) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${description}`);
    await sleep(everyMs);
  }
}

// ---- the mesh -------------------------------------------------------------------------------

function buildUi() {
  log("building the UI (npm run build -w clients/web)");
  const built = spawnSync("npm", ["run", "build", "-w", "clients/web", "--silent"], { cwd: ROOT, stdio: "inherit" });
  check(built.status === 0, "the UI build failed");
}

async function startMesh() {
  const stateDir = mkdtempSync(join(tmpdir(), "evalmesh-web-e2e-"));
  const output = [];
  const child = spawn(PYTHON, ["-m", "evalmesh_deploy.local", "up", "--state-dir", stateDir, "--edge-port", "0"], {
    cwd: ROOT,
    stdio: ["ignore", "pipe", "pipe"],
  });
  child.stdout.on("data", (data) => output.push(String(data)));
  child.stderr.on("data", (data) => output.push(String(data)));
  const stateFile = join(stateDir, "mesh.json");
  try {
    await until(
      "the mesh to come up",
      () => {
        check(child.exitCode === null, `the mesh exited early:\n${output.join("")}`);
        return existsSync(stateFile);
      },
      180_000,
      250,
    );
  } catch (error) {
    await stopMesh({ child, stateDir });
    throw error;
  }
  const state = JSON.parse(readFileSync(stateFile, "utf8"));
  return { child, stateDir, state, output };
}

async function stopMesh(mesh) {
  if (mesh.child.exitCode === null) {
    const exited = new Promise((done) => mesh.child.once("exit", done));
    process.kill(mesh.child.pid, "SIGINT");
    const stopped = await Promise.race([exited.then(() => true), sleep(60_000).then(() => false)]);
    if (!stopped) process.kill(mesh.child.pid, "SIGKILL");
  }
  rmSync(mesh.stateDir, { recursive: true, force: true });
}

async function grpcurl(mesh, method, body) {
  const { stdout } = await run(GRPCURL, [
    "-plaintext",
    "-H",
    `authorization: Bearer ${mesh.state.admin_api_key}`,
    "-d",
    JSON.stringify(body),
    mesh.state.gateway,
    method,
  ]);
  return JSON.parse(stdout);
}

// ---- page helpers ---------------------------------------------------------------------------

async function shot(page, name) {
  await page.screenshot({ path: join(ARTIFACTS, `${name}.png`), fullPage: true });
}

async function setCode(page, code) {
  await page.locator(".cm-content").click();
  await page.keyboard.press("Control+A");
  await page.keyboard.press("Delete");
  await page.keyboard.insertText(code);
}

async function newEvaluation(page) {
  await page.getByRole("link", { name: "New", exact: true }).click();
  await page.locator(".cm-content").waitFor();
}

async function clearLimits(page) {
  for (const label of ["Wall timeout (seconds)", "Memory limit (MiB)", "Output limit per stream (KiB)", "Labels"]) {
    await page.getByLabel(label).fill("");
  }
}

async function openedEvaluationId(page) {
  await page.waitForURL(/#\/evaluations\/[A-Za-z0-9_-]+$/, { timeout: 30_000 });
  return decodeURIComponent(new URL(page.url()).hash.split("/").pop());
}

const stateOf = (page) => page.locator(".monitor-status .badge").first().textContent({ timeout: 30_000 });
const stdoutOf = (page) => page.getByTestId("stdout-text").textContent();

async function waitForState(page, wanted, timeoutMs = 60_000) {
  await until(`state ${wanted}`, async () => (await stateOf(page)) === wanted, timeoutMs, 200);
}

// ---- the scenarios ----------------------------------------------------------------------------

async function scenarios(page, mesh) {
  const url = mesh.state.url;

  await step("a wrong key is refused and the admin key signs in", async () => {
    await page.goto(url);
    await page.getByLabel("API key").waitFor();
    await shot(page, "01-sign-in");
    await page.getByLabel("API key").fill("em_not-a-real-key");
    await page.getByRole("button", { name: "Sign in" }).click();
    await page.getByText("The API key was not accepted.").waitFor();
    await page.getByLabel("API key").fill(mesh.state.admin_api_key);
    await page.getByRole("button", { name: "Sign in" }).click();
    await page.getByRole("heading", { name: "New evaluation" }).waitFor();
    check(await page.getByRole("link", { name: "Cluster" }).isVisible(), "an admin sees the Cluster link");
    const stored = await page.evaluate(() => sessionStorage.getItem("evalmesh.apiKey"));
    check(stored === mesh.state.admin_api_key, "the key is kept in sessionStorage");
    await shot(page, "02-editor");
  });

  let helloId = "";
  await step("hello world streams its output and ends SUCCEEDED with timings", async () => {
    await page.getByRole("button", { name: "Hello world" }).click();
    await page.getByRole("button", { name: /^Run/ }).click();
    helloId = await openedEvaluationId(page);
    const seen = new Set();
    let streamingShot = false;
    await until(
      "SUCCEEDED",
      async () => {
        const text = (await stdoutOf(page)) ?? "";
        const state = await stateOf(page);
        if (text.includes("Hello, world!") && state === "Running") {
          seen.add(text);
          if (!streamingShot) {
            streamingShot = true;
            await shot(page, "03-hello-streaming");
          }
        }
        return state === "Succeeded";
      },
      60_000,
      50,
    );
    check(seen.size >= 2, `output should arrive in pieces while running (saw ${seen.size} partial states)`);
    const stdout = await stdoutOf(page);
    check(stdout.startsWith("Hello, world!\nstep 1 of 5\n") && stdout.includes("step 5 of 5"), `stdout: ${stdout}`);
    check((await page.getByTestId("fact-exit").textContent()) === "exit code 0", "exit code 0 shown");
    for (const fact of ["fact-wall", "fact-cpu", "fact-memory"]) {
      const value = await page.getByTestId(fact).textContent();
      check(value && value !== "–", `${fact} shows a value, got ${value}`);
    }
    check((await page.getByTestId("timeline-ended").textContent()).includes("Succeeded"), "timeline ends Succeeded");
    // Where its time went: every stage the platform records, each with a measured span.
    // (Its output is small, so it was stored with the result: one stage for both.)
    for (const stage of ["queued", "preparing", "running", "finishing"]) {
      const text = await page.getByTestId(`stage-${stage}`).textContent({ timeout: 10_000 });
      check(/\d+(\.\d+)? (ms|s)\b|< 1 ms/.test(text), `stage ${stage} shows its span: ${text}`);
    }
    const running = await page.getByTestId("stage-running").textContent();
    check(/^Running\s*[1-9]/.test(running.replace(/\s+/g, " ")), `the program ran for seconds: ${running}`);
    await page.getByText("Code that ran").click();
    await page.getByTestId("code-listing").waitFor();
    await shot(page, "04-hello-succeeded");
  });

  await step("an exception fails with its traceback on stderr, blamed on the program", async () => {
    await newEvaluation(page);
    await clearLimits(page);
    await page.getByRole("button", { name: "An exception" }).click();
    await page.getByRole("button", { name: /^Run/ }).click();
    await openedEvaluationId(page);
    await waitForState(page, "Failed", 60_000);
    // The terminal state can be shown a moment before the output that came with the result.
    let stderr = "";
    try {
      await until(
        "the traceback on stderr",
        async () => {
          stderr = (await page.getByTestId("stderr-text").textContent()) ?? "";
          return stderr.includes("ZeroDivisionError");
        },
        10_000,
      );
    } catch {
      // reported below with what was shown
    }
    check(stderr.includes("ZeroDivisionError"), `stderr: ${stderr}`);
    check((await page.getByTestId("fact-exit").textContent()) === "exit code 1", "exit code 1 shown");
    check((await page.getByTestId("timeline-ended").textContent()).includes("user fault"), "the program is at fault");
    await shot(page, "05-exception");
  });

  await step("the NumPy example runs on python-ml and shows where its time went", async () => {
    await newEvaluation(page);
    await clearLimits(page);
    await page.getByRole("button", { name: "NumPy job" }).click();
    await page.getByRole("button", { name: /^Run/ }).click();
    await openedEvaluationId(page);
    await waitForState(page, "Succeeded", 120_000);
    const stdout = await stdoutOf(page);
    check(/^numpy \d+\.\d+/.test(stdout) && stdout.includes("largest eigenvalues:"), `stdout: ${stdout}`);
    // Its output may be stored before the result or with it: "Output" then "Result", or one stage.
    const last = (await page.getByTestId("stage-finishing").count()) > 0 ? "finishing" : "recording";
    for (const stage of ["queued", "preparing", "running", last]) {
      const text = await page.getByTestId(`stage-${stage}`).textContent({ timeout: 10_000 });
      check(/\d+(\.\d+)? (ms|s)\b|< 1 ms/.test(text), `stage ${stage} shows its span: ${text}`);
    }
    await shot(page, "05-numpy");
  });

  await step("binary output and terminal escapes are shown safely, not obeyed", async () => {
    await newEvaluation(page);
    await page.getByRole("button", { name: "Binary output" }).click();
    await page.getByRole("button", { name: /^Run/ }).click();
    await openedEvaluationId(page);
    await waitForState(page, "Succeeded", 60_000);
    const stdout = await stdoutOf(page);
    check(
      stdout.startsWith("\\x1b[31mnot red\\x1b[0m \\u202eevil\\u202c"),
      `escapes shown as text: ${stdout.slice(0, 60)}`,
    );
    check(stdout.includes("0123456789:;<=>?@ABC"), "printable bytes shown as they are");
    const escaped = await page.locator("[data-testid=stdout-text] .escaped").count();
    check(escaped >= 5, `control and invalid bytes are marked (${escaped} runs)`);
    check((await page.getByTestId("stdout-bytes").textContent()) === "284 bytes", "every byte counted");
    await shot(page, "06-binary-output");
  });

  await step("a value out of bounds is shown on its field with the bound", async () => {
    await newEvaluation(page);
    await clearLimits(page);
    await page.getByLabel("Memory limit (MiB)").fill("1");
    await page.getByLabel("Wall timeout (seconds)").fill("5000");
    await page.getByRole("button", { name: /^Run/ }).click();
    const memoryError = await page.getByTestId("memory-error").textContent({ timeout: 15_000 });
    check(memoryError.includes("16 MiB") && memoryError.includes("4 GiB"), `memory error: ${memoryError}`);
    const timeoutError = await page.getByTestId("timeout-error").textContent();
    check(timeoutError.includes("900"), `timeout error: ${timeoutError}`);
    check(
      (await page.getByLabel("Memory limit (MiB)").getAttribute("aria-invalid")) === "true",
      "memory is marked invalid",
    );
    check(
      await page.getByLabel("Wall timeout (seconds)").evaluate((el) => el === document.activeElement),
      "first invalid field has focus",
    );
    check(new URL(page.url()).hash === "#/new", "nothing was created");
    await shot(page, "07-validation-error");
  });

  await step("an infinite loop can be cancelled and keeps its partial output", async () => {
    await clearLimits(page);
    await page.getByRole("button", { name: "Infinite loop" }).click();
    await page.getByRole("button", { name: /^Run/ }).click();
    await openedEvaluationId(page);
    await until("a few ticks", async () => ((await stdoutOf(page)) ?? "").includes("tick 2"), 60_000);
    await page.getByRole("button", { name: "Cancel", exact: true }).click();
    await waitForState(page, "Cancelled", 15_000);
    check((await stdoutOf(page)).includes("tick 0"), "partial output is kept");
    check((await page.getByTestId("timeline-ended").textContent()).includes("Cancelled"), "timeline ends Cancelled");
    await shot(page, "08-cancelled");
  });

  await step("a reload mid-run resumes the output where it was", async () => {
    await newEvaluation(page);
    await clearLimits(page);
    await setCode(
      page,
      'import time\nfor i in range(16):\n    print(f"line {i:02d}", flush=True)\n    time.sleep(0.5)\nprint("all done")\n',
    );
    await page.keyboard.press("Control+Enter"); // submits from inside the editor
    const id = await openedEvaluationId(page);
    await until("a few lines", async () => ((await stdoutOf(page)) ?? "").includes("line 03"), 60_000);
    check((await stateOf(page)) === "Running", "still running before the reload");
    await shot(page, "09-before-reload");
    const before = await stdoutOf(page);
    await page.reload();
    await page.getByTestId("stdout-text").waitFor();
    check(new URL(page.url()).hash === `#/evaluations/${id}`, "the evaluation stays in the URL");
    const after = (await stdoutOf(page)) ?? "";
    check(after.startsWith(before.slice(0, 16)), "the output held before the reload is shown at once");
    await page.getByText(/resumed from \d+ bytes/).waitFor({ timeout: 5000 });
    await until("more lines after the reload", async () => ((await stdoutOf(page)) ?? "").includes("line 12"), 60_000);
    await shot(page, "10-after-reload");
    await waitForState(page, "Succeeded", 60_000);
    const full = await stdoutOf(page);
    const expected =
      Array.from({ length: 16 }, (_, i) => `line ${String(i).padStart(2, "0")}\n`).join("") + "all done\n";
    check(full === expected, `the output is complete, in order, without repeats:\n${full}`);
  });

  await step("the dashboard shows the queue, executors and throughput", async () => {
    const requests = Array.from({ length: 6 }, (_, i) => ({
      request_id: `e2e-queue-${Date.now()}-${i}`,
      spec: { code: "import time\ntime.sleep(60)\n", priority: "PRIORITY_LOW", labels: { e2e: "queue" } },
    }));
    await grpcurl(mesh, "evalmesh.v1.EvaluationService/BatchCreateEvaluations", { requests });
    await page.getByRole("link", { name: "Cluster" }).click();
    await until(
      "queued work on the dashboard",
      async () => Number(await page.getByTestId("tile-queued").textContent()) > 0,
      30_000,
      250,
    );
    await until(
      "a few samples in the chart",
      async () => (await page.locator("[data-testid=queue-chart] polyline").count()) === 3,
      30_000,
      250,
    );
    const low = await page.getByTestId("queue-depth-low").textContent();
    check(/Low: [1-9]\d* queued/.test(low), `low priority depth shown: ${low}`);
    check((await page.getByTestId("executor-row").count()) >= 1, "executors are listed");
    check(/^\d+ \/ [1-9]\d*$/.test(await page.getByTestId("tile-slots").textContent()), "slot use is shown");
    // The last hour as the server recorded it, not only what this tab has seen.
    await page.getByTestId("activity-chart").waitFor({ timeout: 20_000 });
    check((await page.locator("[data-testid=activity-chart] rect.activity-bar").count()) === 60, "60 buckets");
    const completed = Number(await page.getByTestId("tile-hour-completed").textContent());
    check(completed >= 4, `the hour's completions include the runs above: ${completed}`);
    for (const tile of ["tile-wait-p50", "tile-wait-p90", "tile-wait-p99"]) {
      const value = await page.getByTestId(tile).textContent();
      check(/\d/.test(value), `${tile} shows a wait: ${value}`);
    }
    await sleep(2500); // a few more samples for the chart
    await shot(page, "11-dashboard");
  });

  await step("the list filters by label and cancels the selected evaluations", async () => {
    await page.getByRole("link", { name: "Evaluations" }).click();
    await page.getByLabel("Labels").fill("e2e=queue");
    await until(
      "the six queued jobs",
      async () => (await page.getByTestId("evaluation-row").count()) === 6,
      20_000,
      250,
    );
    await shot(page, "12-list-filtered");
    await page.getByLabel("Select every evaluation on this page").check();
    await page.getByRole("button", { name: /Cancel selected \(6\)/ }).click();
    await page.getByText(/Cancelled 6/).waitFor({ timeout: 20_000 });
    await until(
      "every row cancelled",
      async () => {
        const states = await page.locator("[data-testid=evaluation-row] .badge").allTextContents();
        return states.length === 6 && states.every((state) => state === "Cancelled");
      },
      20_000,
      250,
    );
    await shot(page, "13-list-cancelled");
  });

  await step("a narrow window gets one column without sideways scrolling", async () => {
    await page.setViewportSize({ width: 390, height: 844 });
    // Forget the output this tab kept: a finished evaluation's output then comes from the server.
    await page.getByRole("link", { name: "Evaluations" }).click();
    await page.evaluate((id) => sessionStorage.removeItem(`evalmesh.output.${id}`), helloId);
    await page.goto(`${url}/#/evaluations/${helloId}`);
    await waitForState(page, "Succeeded", 20_000);
    await until("the stored output", async () => ((await stdoutOf(page)) ?? "").includes("step 5 of 5"), 20_000);
    check((await page.getByText(/resumed from/).count()) === 0, "nothing came from the tab's cache");
    const overflow = await page.evaluate(
      () => document.documentElement.scrollWidth - document.documentElement.clientWidth,
    );
    check(overflow <= 0, `the monitor scrolls sideways by ${overflow}px`);
    await shot(page, "14-narrow-monitor");
    await newEvaluation(page);
    const editorOverflow = await page.evaluate(
      () => document.documentElement.scrollWidth - document.documentElement.clientWidth,
    );
    check(editorOverflow <= 0, `the editor scrolls sideways by ${editorOverflow}px`);
    await shot(page, "15-narrow-editor");
    await page.setViewportSize({ width: 1280, height: 800 });
  });

  await step("the keyboard reaches every control and sign-out forgets the key", async () => {
    await page.goto(`${url}/#/new`);
    await page.reload(); // start with nothing focused
    await page.locator(".cm-content").waitFor();
    await page.keyboard.press("Tab"); // skip link first
    check((await page.evaluate(() => document.activeElement?.textContent)) === "Skip to content", "skip link is first");
    const reached = new Set();
    for (let i = 0; i < 40; i += 1) {
      await page.keyboard.press("Tab");
      reached.add(
        await page.evaluate(() => document.activeElement?.id || document.activeElement?.textContent?.trim() || ""),
      );
    }
    for (const id of ["code", "stdin", "runtime", "priority", "timeout", "memory", "output", "labels"]) {
      check(reached.has(id), `Tab reaches #${id} (reached: ${[...reached].join(", ")})`);
    }
    await page.getByRole("button", { name: "Sign out" }).click();
    await page.getByLabel("API key").waitFor();
    check((await page.evaluate(() => sessionStorage.length)) === 0, "sign-out clears session storage");
    await shot(page, "16-signed-out");
  });

  await step("a user key sees no dashboard and no other tenant's evaluation", async () => {
    const created = await grpcurl(mesh, "evalmesh.v1.ApiKeyService/CreateApiKey", {
      tenant: "e2e-user",
      role: "ROLE_USER",
      display_name: "web e2e",
    });
    await page.getByLabel("API key").fill(created.secret);
    await page.getByRole("button", { name: "Sign in" }).click();
    await page.getByRole("heading", { name: "New evaluation" }).waitFor();
    check((await page.getByRole("link", { name: "Cluster" }).count()) === 0, "no Cluster link for a user key");
    await page.goto(`${url}/#/cluster`);
    await page.getByText("The cluster dashboard needs an admin API key.").waitFor();
    await page.goto(`${url}/#/evaluations/${helloId}`);
    await page
      .getByTestId("connection")
      .getByText(/Not found/)
      .waitFor();
    await shot(page, "17-other-tenant");
    await page.getByRole("button", { name: "Sign out" }).click();
    await page.getByLabel("API key").waitFor();
  });
}

// ---- main ---------------------------------------------------------------------------------------

async function main() {
  if (!existsSync(CHROMIUM)) {
    log(`no Chromium at ${CHROMIUM}`);
    process.exit(2);
  }
  mkdirSync(ARTIFACTS, { recursive: true });
  if (!args.has("--no-build")) buildUi();
  log("starting the mesh (python -m evalmesh_deploy.local up)");
  const mesh = await startMesh();
  log(`mesh up at ${mesh.state.url}`);
  const profile = mkdtempSync(join(tmpdir(), "evalmesh-chromium-"));
  let context;
  try {
    context = await chromium.launchPersistentContext(profile, {
      executablePath: CHROMIUM,
      headless: !args.has("--headed"),
      viewport: { width: 1280, height: 800 },
      args: [
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
      ],
    });
    const page = context.pages()[0] ?? (await context.newPage());
    page.setDefaultTimeout(30_000);
    page.on("console", (message) => {
      if (message.type() === "error") consoleErrors.push(message.text());
    });
    page.on("pageerror", (error) => consoleErrors.push(`uncaught: ${error.message}`));
    await scenarios(page, mesh);
    await step("no console errors", () => check(consoleErrors.length === 0, consoleErrors.join("\n")));
  } finally {
    await context?.close();
    rmSync(profile, { recursive: true, force: true });
    await stopMesh(mesh);
    log(`screenshots in ${ARTIFACTS}`);
  }
  const failed = results.filter((result) => !result.ok).length;
  process.stdout.write(`\n${results.length - failed} passed, ${failed} failed\n`);
  process.exit(failed === 0 ? 0 : 1);
}

main().catch((error) => {
  log(`error: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}`);
  process.exit(1);
});
