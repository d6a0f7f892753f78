import { Priority } from "@evalmesh/proto/evalmesh/v1/evaluation_pb";
import type { KeyboardEvent } from "react";

import { PRIORITIES_IN_ORDER, PRIORITY_NAMES } from "../format";
import { CodeEditor } from "./code-editor";
import type { FieldErrors, FormValues } from "./evaluation-form";
import { EXAMPLES, type Example } from "./examples";
import { FormField } from "./form-field";
import type { RuntimeOption } from "./use-runtimes";

export interface EvaluationFormViewProps {
  values: FormValues;
  errors: FieldErrors;
  runtimes: RuntimeOption[];
  submitting: boolean;
  onChange: (values: Partial<FormValues>) => void;
  onExample: (example: Example) => void;
  onSubmit: () => void;
}

const IS_MAC = typeof navigator !== "undefined" && /Mac|iPhone|iPad/.test(navigator.userAgent);

function priorityOf(value: string): Priority {
  return PRIORITIES_IN_ORDER.find((priority) => String(priority) === value) ?? Priority.NORMAL;
}

/** EvaluationFormView is the editor and its settings; it holds no state of its own. */
export function EvaluationFormView({
  values,
  errors,
  runtimes,
  submitting,
  onChange,
  onExample,
  onSubmit,
}: EvaluationFormViewProps) {
  const onKeyDown = (event: KeyboardEvent<HTMLFormElement>) => {
    // CodeMirror handles the shortcut itself (and marks the event handled) inside the editor.
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey) && !event.defaultPrevented) {
      event.preventDefault();
      onSubmit();
    }
  };
  const runtimeNames = new Set(runtimes.map((runtime) => runtime.name));
  return (
    <form
      className="editor-layout"
      aria-label="New evaluation"
      noValidate
      onKeyDown={onKeyDown}
      onSubmit={(event) => {
        event.preventDefault();
        onSubmit();
      }}
    >
      <section className="editor-main">
        <FormField id="code" label="Code (Python)" error={errors.code}>
          {(control) => (
            <CodeEditor
              id={control.id}
              value={values.code}
              invalid={control["aria-invalid"]}
              describedBy={control["aria-describedby"]}
              onChange={(code) => onChange({ code })}
              onSubmit={onSubmit}
            />
          )}
        </FormField>
        <div className="examples" role="group" aria-label="Examples">
          <span className="muted">Start from an example:</span>
          {EXAMPLES.map((example) => (
            <button
              key={example.id}
              type="button"
              className="chip"
              title={example.summary}
              onClick={() => onExample(example)}
            >
              {example.title}
            </button>
          ))}
        </div>
        <FormField
          id="stdin"
          label="Standard input"
          hint="Fed to the program; empty means end of file at once."
          error={errors.stdin}
        >
          {(control) => (
            <textarea
              {...control}
              rows={3}
              spellCheck={false}
              value={values.stdin}
              onChange={(event) => onChange({ stdin: event.target.value })}
            />
          )}
        </FormField>
      </section>
      <aside className="editor-settings" aria-label="Settings">
        <FormField id="runtime" label="Runtime" error={errors.runtime}>
          {(control) => (
            <select {...control} value={values.runtime} onChange={(event) => onChange({ runtime: event.target.value })}>
              {runtimes.map((runtime) => (
                <option key={runtime.name} value={runtime.name}>
                  {runtime.label}
                </option>
              ))}
              {runtimeNames.has(values.runtime) ? null : <option value={values.runtime}>{values.runtime}</option>}
            </select>
          )}
        </FormField>
        <FormField id="priority" label="Priority" error={errors.priority}>
          {(control) => (
            <select
              {...control}
              value={values.priority}
              onChange={(event) => onChange({ priority: priorityOf(event.target.value) })}
            >
              {PRIORITIES_IN_ORDER.map((priority) => (
                <option key={priority} value={priority}>
                  {PRIORITY_NAMES[priority]}
                </option>
              ))}
            </select>
          )}
        </FormField>
        <FormField
          id="timeout"
          label="Wall timeout (seconds)"
          hint="Empty: the default (30 s)."
          error={errors.timeoutSeconds}
        >
          {(control) => (
            <input
              {...control}
              inputMode="decimal"
              placeholder="30"
              value={values.timeoutSeconds}
              onChange={(event) => onChange({ timeoutSeconds: event.target.value })}
            />
          )}
        </FormField>
        <FormField id="memory" label="Memory limit (MiB)" hint="Empty: the default (256 MiB)." error={errors.memoryMiB}>
          {(control) => (
            <input
              {...control}
              inputMode="decimal"
              placeholder="256"
              value={values.memoryMiB}
              onChange={(event) => onChange({ memoryMiB: event.target.value })}
            />
          )}
        </FormField>
        <FormField
          id="output"
          label="Output limit per stream (KiB)"
          hint="Empty: the default (1024 KiB)."
          error={errors.outputKiB}
        >
          {(control) => (
            <input
              {...control}
              inputMode="decimal"
              placeholder="1024"
              value={values.outputKiB}
              onChange={(event) => onChange({ outputKiB: event.target.value })}
            />
          )}
        </FormField>
        <FormField id="labels" label="Labels" hint="key=value, separated by commas." error={errors.labels}>
          {(control) => (
            <input
              {...control}
              spellCheck={false}
              placeholder="team=ml, run=7"
              value={values.labels}
              onChange={(event) => onChange({ labels: event.target.value })}
            />
          )}
        </FormField>
        <button type="submit" className="primary submit" disabled={submitting}>
          {submitting ? "Submitting…" : "Run"} <kbd>{IS_MAC ? "⌘" : "Ctrl"}+Enter</kbd>
        </button>
      </aside>
    </form>
  );
}
