/** downloadBytes offers ``bytes`` to the user as a file, exactly as received. */
export function downloadBytes(bytes: Uint8Array, filename: string): void {
  const blob = new Blob([bytes.slice().buffer], { type: "application/octet-stream" });
  const url = URL.createObjectURL(blob);
  const link = document.createElement("a");
  link.href = url;
  link.download = filename;
  link.click();
  setTimeout(() => URL.revokeObjectURL(url), 0);
}
