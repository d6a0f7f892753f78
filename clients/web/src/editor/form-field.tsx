import type { ReactNode } from "react";

export interface FormFieldProps {
  id: string;
  label: string;
  hint?: string;
  error?: string;
  className?: string;
  /** children render the control; it must use ``id``, ``aria-invalid`` and ``aria-describedby`` from here. */
  children: (control: { id: string; "aria-invalid": boolean; "aria-describedby"?: string }) => ReactNode;
}

/** FormField lays out a label, a control, a hint and the control's error, wired for assistive tech. */
export function FormField({ id, label, hint, error, className, children }: FormFieldProps) {
  const described = [hint ? `${id}-hint` : "", error ? `${id}-error` : ""].filter(Boolean).join(" ");
  return (
    <div className={`field${error ? " field-invalid" : ""}${className ? ` ${className}` : ""}`}>
      <label htmlFor={id}>{label}</label>
      {children({ id, "aria-invalid": Boolean(error), ...(described ? { "aria-describedby": described } : {}) })}
      {hint ? (
        <div id={`${id}-hint`} className="hint">
          {hint}
        </div>
      ) : null}
      {error ? (
        <div id={`${id}-error`} className="field-error" data-testid={`${id}-error`}>
          {error}
        </div>
      ) : null}
    </div>
  );
}
