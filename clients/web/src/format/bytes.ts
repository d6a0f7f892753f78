const UNITS = ["bytes", "KiB", "MiB", "GiB", "TiB"] as const;

/** formatBytes renders a byte count in IEC units: 1536 -> "1.5 KiB", 268435456 -> "256 MiB". */
export function formatBytes(value: bigint | number): string {
  let amount = Number(value);
  let unit = 0;
  while (Math.abs(amount) >= 1024 && unit < UNITS.length - 1) {
    amount /= 1024;
    unit += 1;
  }
  if (unit === 0) return `${amount} ${amount === 1 ? "byte" : "bytes"}`;
  const digits = Number.isInteger(amount) ? 0 : amount < 10 ? 2 : 1;
  return `${amount.toFixed(digits).replace(/\.?0+$/, "")} ${UNITS[unit]}`;
}
