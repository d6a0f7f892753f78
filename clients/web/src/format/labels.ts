/** The result of reading a "key=value, key2=value2" labels field. */
export type ParsedLabels = { ok: true; labels: Record<string, string> } | { ok: false; error: string };

/**
 * parseLabels reads labels typed as comma- or newline-separated key=value pairs. It checks only the
 * shape; the gateway checks keys and values against the operator's rules and names the bad one.
 */
export function parseLabels(text: string): ParsedLabels {
  const labels: Record<string, string> = {};
  for (const raw of text.split(/[,\n]/)) {
    const item = raw.trim();
    if (!item) continue;
    const eq = item.indexOf("=");
    if (eq <= 0) return { ok: false, error: `"${item}" is not key=value` };
    const key = item.slice(0, eq).trim();
    if (key in labels) return { ok: false, error: `label "${key}" is given twice` };
    labels[key] = item.slice(eq + 1).trim();
  }
  return { ok: true, labels };
}

/** formatLabels renders labels back as the text parseLabels reads, sorted by key. */
export function formatLabels(labels: Readonly<Record<string, string>>): string {
  return Object.keys(labels)
    .sort()
    .map((key) => `${key}=${labels[key] ?? ""}`)
    .join(", ");
}
