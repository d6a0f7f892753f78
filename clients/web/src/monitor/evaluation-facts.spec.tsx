// @vitest-environment jsdom
import { create } from "@bufbuild/protobuf";
import { DurationSchema } from "@bufbuild/protobuf/wkt";
import {
  EvaluationResultSchema,
  EvaluationSchema,
  Evaluation_State as State,
  TerminationCause as Cause,
} from "@evalmesh/proto/evalmesh/v1/evaluation_pb";
import { render, screen } from "@testing-library/react";
import { describe, expect, it } from "vitest";

import { EvaluationFacts } from "./evaluation-facts";

describe("EvaluationFacts", () => {
  it("shows the signal that ended a program, its times and its peak memory", () => {
    const evaluation = create(EvaluationSchema, {
      state: State.MEMORY_LIMIT_EXCEEDED,
      attempt: 1,
      runtime: "python",
      result: create(EvaluationResultSchema, {
        cause: Cause.MEMORY_LIMIT,
        signal: 9,
        wallTime: create(DurationSchema, { seconds: 1n, nanos: 250_000_000 }),
        cpuTime: create(DurationSchema, { nanos: 900_000_000 }),
        peakMemoryBytes: 128n * 1024n * 1024n,
      }),
    });
    render(<EvaluationFacts evaluation={evaluation} />);
    expect(screen.getByTestId("fact-exit").textContent).toBe("signal 9 (SIGKILL)");
    expect(screen.getByTestId("fact-wall").textContent).toBe("1.25 s");
    expect(screen.getByTestId("fact-cpu").textContent).toBe("900 ms");
    expect(screen.getByTestId("fact-memory").textContent).toBe("128 MiB");
  });

  it("shows dashes for what a running evaluation has not measured yet", () => {
    render(<EvaluationFacts evaluation={create(EvaluationSchema, { state: State.RUNNING, attempt: 1 })} />);
    for (const fact of ["fact-exit", "fact-wall", "fact-cpu", "fact-memory"]) {
      expect(screen.getByTestId(fact).textContent).toBe("–");
    }
  });
});
