/** Cancels many evaluations with a few calls in flight at a time, and says how each went. */
import type { EvaluationClient } from "../api";
import { toProblem } from "../api";

export interface BatchOutcome {
  cancelled: string[];
  failed: { id: string; message: string }[];
}

export async function cancelMany(
  client: Pick<EvaluationClient, "cancelEvaluation">,
  ids: readonly string[],
  concurrency = 4,
): Promise<BatchOutcome> {
  const outcome: BatchOutcome = { cancelled: [], failed: [] };
  const queue = [...ids];
  const worker = async () => {
    for (let id = queue.shift(); id !== undefined; id = queue.shift()) {
      try {
        await client.cancelEvaluation({ id, reason: "batch cancel in the web UI" });
        outcome.cancelled.push(id);
      } catch (error) {
        outcome.failed.push({ id, message: toProblem(error).message });
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, ids.length) }, worker));
  return outcome;
}
