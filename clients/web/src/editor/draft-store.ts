/** The form being written, kept for the tab's session so leaving the page loses nothing. */
import { DEFAULT_VALUES, type FormValues } from "./evaluation-form";

const KEY = "evalmesh.draft";

export function loadDraft(): FormValues {
  try {
    const saved = JSON.parse(sessionStorage.getItem(KEY) ?? "null") as Partial<FormValues> | null;
    if (!saved || typeof saved !== "object") return DEFAULT_VALUES;
    const values = { ...DEFAULT_VALUES };
    for (const key of Object.keys(DEFAULT_VALUES) as (keyof FormValues)[]) {
      if (typeof saved[key] === typeof DEFAULT_VALUES[key]) Object.assign(values, { [key]: saved[key] });
    }
    return values;
  } catch {
    return DEFAULT_VALUES;
  }
}

export function saveDraft(values: FormValues): void {
  try {
    sessionStorage.setItem(KEY, JSON.stringify(values));
  } catch {
    // storage full or disabled: the draft then lives only on this page
  }
}
