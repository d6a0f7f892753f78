// @vitest-environment jsdom
import { Code, ConnectError } from "@connectrpc/connect";
import { describe, expect, it } from "vitest";

import type { EvaluationClient } from "../api";
import { cancelMany } from "./batch-cancel";

describe("cancelMany", () => {
  it("cancels every id with a bounded number of calls in flight and reports failures", async () => {
    let inFlight = 0;
    let most = 0;
    const client = {
      async cancelEvaluation({ id }: { id: string }) {
        inFlight += 1;
        most = Math.max(most, inFlight);
        await new Promise((resolve) => setTimeout(resolve, 5));
        inFlight -= 1;
        if (id === "gone") throw new ConnectError("missing", Code.NotFound);
        return {};
      },
    } as unknown as Pick<EvaluationClient, "cancelEvaluation">;
    const ids = ["a", "b", "gone", "c", "d", "e", "f"];
    const outcome = await cancelMany(client, ids, 3);
    expect(most).toBe(3);
    expect(outcome.cancelled.sort()).toEqual(["a", "b", "c", "d", "e", "f"]);
    expect(outcome.failed).toEqual([{ id: "gone", message: expect.stringContaining("Not found") as string }]);
  });
});
