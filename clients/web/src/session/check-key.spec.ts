// @vitest-environment jsdom
import { Code, ConnectError } from "@connectrpc/connect";
import { describe, expect, it, vi } from "vitest";

import { checkKey } from "./check-key";

const api = vi.hoisted(() => ({ getQueueStats: vi.fn(), listEvaluations: vi.fn() }));

vi.mock("../api", async (importOriginal) => ({
  ...(await importOriginal<typeof import("../api")>()),
  cluster: { getQueueStats: api.getQueueStats },
  evaluations: { listEvaluations: api.listEvaluations },
}));

describe("checkKey", () => {
  it("recognises an admin key and sends it as a bearer token", async () => {
    api.getQueueStats.mockResolvedValue({});
    expect(await checkKey("emk_admin")).toEqual({ ok: true, admin: true });
    expect(api.getQueueStats).toHaveBeenCalledWith({}, { headers: { authorization: "Bearer emk_admin" } });
  });

  it("takes PERMISSION_DENIED as a valid user key", async () => {
    api.getQueueStats.mockRejectedValue(new ConnectError("admin only", Code.PermissionDenied));
    expect(await checkKey("emk_user")).toEqual({ ok: true, admin: false });
    expect(api.listEvaluations).not.toHaveBeenCalled();
  });

  it("refuses a key the gateway does not accept", async () => {
    api.getQueueStats.mockRejectedValue(new ConnectError("bad key", Code.Unauthenticated));
    expect(await checkKey("nope")).toMatchObject({ ok: false, problem: { code: Code.Unauthenticated } });
  });

  it("falls back to listing when the cluster view is down", async () => {
    api.getQueueStats.mockRejectedValue(new ConnectError("scheduler down", Code.Unavailable));
    api.listEvaluations.mockResolvedValue({ evaluations: [] });
    expect(await checkKey("emk_user")).toEqual({ ok: true, admin: false });
  });
});
