import { Code } from "@connectrpc/connect";
import { useEffect, useRef, useState } from "react";

import { evaluations, toProblem, type FieldViolation, type RpcProblem } from "../api";
import { navigate } from "../routing";
import { ProblemBanner } from "../ui";
import { loadDraft, saveDraft } from "./draft-store";
import { buildRequest, placeViolations, valuesFromSpec, type FieldErrors, type FormValues } from "./evaluation-form";
import { EvaluationFormView } from "./evaluation-form-view";
import type { Example } from "./examples";
import { newRequestId } from "./request-id";
import { useRuntimes } from "./use-runtimes";

const FIELD_IDS: Record<keyof FormValues, string> = {
  code: "code",
  stdin: "stdin",
  runtime: "runtime",
  priority: "priority",
  timeoutSeconds: "timeout",
  memoryMiB: "memory",
  outputKiB: "output",
  labels: "labels",
};

function focusFirstInvalid(errors: FieldErrors): void {
  const first = (Object.keys(FIELD_IDS) as (keyof FormValues)[]).find((field) => errors[field]);
  if (first) document.getElementById(FIELD_IDS[first])?.focus();
}

/** NewEvaluationPage writes and submits an evaluation, then opens its monitor. */
export function NewEvaluationPage({ from }: { from?: string }) {
  const [values, setValues] = useState<FormValues>(loadDraft);
  const [errors, setErrors] = useState<FieldErrors>({});
  const [problem, setProblem] = useState<RpcProblem>();
  const [unplaced, setUnplaced] = useState<FieldViolation[]>([]);
  const [submitting, setSubmitting] = useState(false);
  const requestId = useRef(newRequestId());
  const inFlight = useRef(false);
  const runtimes = useRuntimes();

  useEffect(() => {
    if (!from) return undefined;
    const controller = new AbortController();
    evaluations.getEvaluation({ id: from }, { signal: controller.signal }).then(
      (reply) => {
        if (reply.evaluation?.spec) setValues(valuesFromSpec(reply.evaluation.spec));
      },
      (error: unknown) => {
        if (!controller.signal.aborted) setProblem(toProblem(error));
      },
    );
    return () => controller.abort();
  }, [from]);

  useEffect(() => saveDraft(values), [values]);

  const change = (patch: Partial<FormValues>) => {
    // A changed form is a different request: a retry of the same form keeps its idempotency key.
    requestId.current = newRequestId();
    setValues((current) => ({ ...current, ...patch }));
    setErrors((current) => Object.fromEntries(Object.entries(current).filter(([field]) => !(field in patch))));
  };

  const submit = () => {
    if (inFlight.current) return;
    const built = buildRequest(values, requestId.current);
    setProblem(undefined);
    setUnplaced([]);
    if (!built.ok) {
      setErrors(built.errors);
      focusFirstInvalid(built.errors);
      return;
    }
    setErrors({});
    inFlight.current = true;
    setSubmitting(true);
    evaluations
      .createEvaluation(built.request)
      .then((reply) => {
        requestId.current = newRequestId();
        const id = reply.evaluation?.id;
        if (id) navigate({ page: "evaluation", id });
      })
      .catch((error: unknown) => {
        const found = toProblem(error);
        const placed = placeViolations(found.violations);
        setErrors(placed.fields);
        setUnplaced(placed.unplaced);
        setProblem(
          found.code === Code.InvalidArgument && placed.unplaced.length === 0
            ? { ...found, message: "Fix the marked fields and run again." }
            : found,
        );
        focusFirstInvalid(placed.fields);
      })
      .finally(() => {
        inFlight.current = false;
        setSubmitting(false);
      });
  };

  const applyExample = (example: Example) => {
    change({ ...example.values, stdin: "", memoryMiB: example.values.memoryMiB ?? "", outputKiB: "" });
  };

  return (
    <div className="page">
      <header className="page-header">
        <h1>New evaluation</h1>
      </header>
      <ProblemBanner problem={problem} unplaced={unplaced} onDismiss={() => setProblem(undefined)} />
      <EvaluationFormView
        values={values}
        errors={errors}
        runtimes={runtimes}
        submitting={submitting}
        onChange={change}
        onExample={applyExample}
        onSubmit={submit}
      />
    </div>
  );
}
