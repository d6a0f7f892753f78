/**
 * Keeps the output already received for a few evaluations in sessionStorage, so a reload resumes
 * the watch from the last offsets instead of replaying everything. Large outputs are not cached
 * (the watch then replays them from storage, which is always correct, only slower).
 */

const PREFIX = "evalmesh.output.";
const INDEX = "evalmesh.output-index";
const MAX_BYTES = 256 * 1024;
const MAX_ENTRIES = 6;

export interface CachedOutput {
  /** attempt is the evaluation attempt that wrote the output. */
  attempt: number;
  stdout: Uint8Array;
  stderr: Uint8Array;
}

function encode(bytes: Uint8Array): string {
  let binary = "";
  for (let at = 0; at < bytes.length; at += 0x8000) {
    binary += String.fromCharCode(...bytes.subarray(at, at + 0x8000));
  }
  return btoa(binary);
}

function decode(text: string): Uint8Array {
  return Uint8Array.from(atob(text), (char) => char.charCodeAt(0));
}

function readIndex(): string[] {
  try {
    const ids: unknown = JSON.parse(sessionStorage.getItem(INDEX) ?? "[]");
    return Array.isArray(ids) ? ids.filter((id): id is string => typeof id === "string") : [];
  } catch {
    return [];
  }
}

/** loadOutput returns the cached output of evaluation ``id``, if any. */
export function loadOutput(id: string): CachedOutput | undefined {
  try {
    const entry = sessionStorage.getItem(PREFIX + id);
    if (!entry) return undefined;
    const parsed = JSON.parse(entry) as { attempt?: unknown; stdout?: unknown; stderr?: unknown };
    const { attempt, stdout, stderr } = parsed;
    if (typeof attempt !== "number" || typeof stdout !== "string" || typeof stderr !== "string") return undefined;
    return { attempt, stdout: decode(stdout), stderr: decode(stderr) };
  } catch {
    return undefined;
  }
}

/** saveOutput caches the output of evaluation ``id``, or drops it when it is too large to keep. */
export function saveOutput(id: string, output: CachedOutput): void {
  try {
    const others = readIndex().filter((other) => other !== id);
    if (output.stdout.length + output.stderr.length > MAX_BYTES) {
      sessionStorage.removeItem(PREFIX + id);
      sessionStorage.setItem(INDEX, JSON.stringify(others));
      return;
    }
    while (others.length >= MAX_ENTRIES) sessionStorage.removeItem(PREFIX + (others.shift() ?? ""));
    const entry = JSON.stringify({
      attempt: output.attempt,
      stdout: encode(output.stdout),
      stderr: encode(output.stderr),
    });
    sessionStorage.setItem(PREFIX + id, entry);
    sessionStorage.setItem(INDEX, JSON.stringify([...others, id]));
  } catch {
    // Storage full or disabled: resuming then replays from the server, which is still correct.
  }
}
