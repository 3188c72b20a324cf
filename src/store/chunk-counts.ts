/**
 * Reference counts of stored chunks, kept for a million chunks at small cost: one Map entry of a
 * number per chunk (its size); only chunks whose count is not 1 (shared ones, and unreferenced
 * ones not yet removed) have a second entry. Totals are maintained on every change (O(1) reads).
 */
export class ChunkCounts {
  /** Stored chunks and their sizes. */
  readonly #bytes = new Map<string, number>();
  /** refs - 1, for chunks whose count is not 1. */
  readonly #extra = new Map<string, number>();
  #total = 0;
  #refs = 0;
  #saved = 0;

  get size(): number {
    return this.#bytes.size;
  }

  has(key: string): boolean {
    return this.#bytes.has(key);
  }

  /** A stored chunk's size, or undefined. */
  bytesOf(key: string): number | undefined {
    return this.#bytes.get(key);
  }

  /** References to a chunk (0 for one not stored). */
  refs(key: string): number {
    return this.#bytes.has(key) ? 1 + (this.#extra.get(key) ?? 0) : 0;
  }

  /** One more reference (a chunk not counted yet is stored now, with this size). */
  ref(key: string, bytes: number): void {
    const size = this.#bytes.get(key);
    if (size === undefined) {
      this.#bytes.set(key, bytes);
      this.#total += bytes;
    } else {
      const n = this.refs(key);
      this.#setRefs(key, n + 1);
      if (n > 0) this.#saved += size;
    }
    this.#refs++;
  }

  /** One reference fewer; the chunk stays counted (at 0) until `drop`. */
  unref(key: string): void {
    const size = this.#bytes.get(key);
    if (size === undefined) return;
    const n = this.refs(key);
    if (n === 0) return;
    this.#setRefs(key, n - 1);
    this.#refs--;
    if (n > 1) this.#saved -= size;
  }

  /** Forgets a chunk removed from storage. */
  drop(key: string): void {
    const size = this.#bytes.get(key);
    if (size === undefined) return;
    const n = this.refs(key);
    this.#refs -= n;
    if (n > 1) this.#saved -= (n - 1) * size;
    this.#total -= size;
    this.#bytes.delete(key);
    this.#extra.delete(key);
  }

  /** Chunks, references, their bytes, and the bytes sharing saves. */
  totals(): { chunks: number; refs: number; bytes: number; saved: number } {
    return { chunks: this.#bytes.size, refs: this.#refs, bytes: this.#total, saved: this.#saved };
  }

  #setRefs(key: string, n: number): void {
    if (n === 1) this.#extra.delete(key);
    else this.#extra.set(key, n - 1);
  }
}
