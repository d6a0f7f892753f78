/**
 * Checks an API key before keeping it, with one call that also tells an admin key from a user key:
 * GetQueueStats answers admins, PERMISSION_DENIED for a valid user key, UNAUTHENTICATED otherwise.
 */
import { Code } from "@connectrpc/connect";

import { cluster, evaluations, toProblem, type RpcProblem } from "../api";

export type KeyCheck = { ok: true; admin: boolean } | { ok: false; problem: RpcProblem };

export async function checkKey(key: string): Promise<KeyCheck> {
  const headers = { authorization: `Bearer ${key}` };
  try {
    await cluster.getQueueStats({}, { headers });
    return { ok: true, admin: true };
  } catch (error) {
    const problem = toProblem(error);
    if (problem.code === Code.PermissionDenied) return { ok: true, admin: false };
    if (problem.code === Code.Unauthenticated) return { ok: false, problem };
  }
  // The cluster view failed for another reason (say, the scheduler is down): is the key good at all?
  try {
    await evaluations.listEvaluations({ pageSize: 1 }, { headers });
    return { ok: true, admin: false };
  } catch (error) {
    return { ok: false, problem: toProblem(error) };
  }
}
