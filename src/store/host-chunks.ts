/**
 * The host tier's encoded chunks: one arena block per distinct chunk key, shared by every host
 * entry whose chain names it and counted once. Each reference is taken by exactly one holder (a
 * host entry, or a hot session that carries the chunks of its previous version) and released
 * once; the block is freed with its last reference. This class is the only owner of the blocks.
 */
import { HostBlock } from './host-block.js';

interface Held {
  block: HostBlock;
  refs: number;
}

export class HostChunks {
  readonly #chunks = new Map<string, Held>();
  #bytes = 0;
  #refs = 0;
  #saved = 0;

  /** Bytes of the distinct chunks held. */
  get bytes(): number {
    return this.#bytes;
  }

  /** Distinct chunks, the references to them, and the bytes sharing saves. */
  totals(): { chunks: number; refs: number; bytes: number; bytesSaved: number } {
    return { chunks: this.#chunks.size, refs: this.#refs, bytes: this.#bytes, bytesSaved: this.#saved };
  }

  has(key: string): boolean {
    return this.#chunks.has(key);
  }

  /** The arena block of a held chunk (for reading or decoding in place), or undefined. */
  block(key: string): HostBlock | undefined {
    return this.#chunks.get(key)?.block;
  }

  /** Takes one more reference to a held chunk; false when it is not held. */
  ref(key: string): boolean {
    const h = this.#chunks.get(key);
    if (!h) return false;
    h.refs++;
    this.#refs++;
    this.#saved += h.block.bytes;
    return true;
  }

  /**
   * Takes the first reference to a new chunk, owning `block` from now on. When the key is held
   * already (another holder stored it meanwhile), the new block is freed and a reference taken.
   */
  add(key: string, block: HostBlock): void {
    if (this.ref(key)) {
      block.free();
      return;
    }
    this.#chunks.set(key, { block, refs: 1 });
    this.#bytes += block.bytes;
    this.#refs++;
  }

  /** Releases one reference to each key; a chunk's block is freed with its last reference. */
  release(keys: readonly string[]): void {
    for (const key of keys) {
      const h = this.#chunks.get(key);
      if (!h) continue;
      h.refs--;
      this.#refs--;
      if (h.refs > 0) {
        this.#saved -= h.block.bytes;
        continue;
      }
      this.#chunks.delete(key);
      this.#bytes -= h.block.bytes;
      h.block.free();
    }
  }

  /** Frees every block (close). */
  clear(): void {
    for (const h of this.#chunks.values()) h.block.free();
    this.#chunks.clear();
    this.#bytes = 0;
    this.#refs = 0;
    this.#saved = 0;
  }
}
