/**
 * StreamBuffer holds one output stream's bytes as they arrive by offset, and their text. Offsets are
 * the resume points of WatchEvaluation: a chunk that overlaps what is held adds only its new bytes,
 * and a chunk that starts past the end reports a gap so the watcher can re-read from the end.
 */

export type AppendResult = "appended" | "duplicate" | "gap";

export class StreamBuffer {
  private pieces: Uint8Array[] = [];
  private size = 0;
  private decoded = "";
  private decoder = new TextDecoder("utf-8", { fatal: false });
  private finished = false;

  /** length is how many bytes are held: the offset to resume from. */
  get length(): number {
    return this.size;
  }

  /** text is the held bytes decoded as UTF-8 (invalid sequences as U+FFFD). */
  get text(): string {
    return this.decoded;
  }

  /** append adds the part of ``data`` (starting at ``offset``) not held yet. */
  append(offset: number, data: Uint8Array): AppendResult {
    if (offset > this.size) return "gap";
    const fresh = data.subarray(this.size - offset);
    if (fresh.length === 0) return "duplicate";
    this.pieces.push(fresh.slice());
    this.size += fresh.length;
    this.decoded += this.decoder.decode(fresh, { stream: true });
    return "appended";
  }

  /**
   * finish ends the text. A character cut off at the very end is shown as U+FFFD (the program wrote
   * it so), unless ``cut`` says the output cap cut the stream there: then it is left out, as the cut
   * is not the program's. The held bytes stay exact either way. Idempotent.
   */
  finish(cut = false): void {
    if (this.finished) return;
    this.finished = true;
    // In streaming mode the decoder holds back only the valid start of an unfinished character.
    if (!cut) this.decoded += this.decoder.decode();
  }

  /** bytes returns every held byte in one array. */
  bytes(): Uint8Array {
    const all = new Uint8Array(this.size);
    let at = 0;
    for (const piece of this.pieces) {
      all.set(piece, at);
      at += piece.length;
    }
    this.pieces = [all];
    return all;
  }
}
