/**
 * An in-memory tier's index: sessions in least-recently-used order (lru-cache, without any
 * automatic eviction — the store decides what leaves a tier, asynchronously) with exact byte
 * accounting, maintained on every change (totals are O(1) to read at any size).
 */
import { LRUCache } from 'lru-cache';

/** What the index sums of an entry (fixed for the entry's life). */
export interface Counted {
  bytes: number;
  overhead: number;
  meta: { rawBytes: number };
}

export class TierIndex<T extends Counted> {
  readonly #lru = new LRUCache<string, T>({ maxSize: Number.MAX_SAFE_INTEGER, sizeCalculation: () => 1 });
  #bytes = 0;
  #raw = 0;
  #overhead = 0;

  get bytes(): number {
    return this.#bytes;
  }

  /** Entries, and the sums of their raw bytes, bytes held and overheads. */
  totals(): { entries: number; rawBytes: number; storedBytes: number; overheadBytes: number } {
    return { entries: this.#lru.size, rawBytes: this.#raw, storedBytes: this.#bytes, overheadBytes: this.#overhead };
  }

  #count(e: T, sign: 1 | -1): void {
    this.#bytes += sign * e.bytes;
    this.#raw += sign * e.meta.rawBytes;
    this.#overhead += sign * e.overhead;
  }

  get size(): number {
    return this.#lru.size;
  }

  /** Inserts or replaces, as most recently used. */
  set(id: string, entry: T): void {
    const old = this.#lru.peek(id);
    if (old) this.#count(old, -1);
    this.#lru.set(id, entry);
    this.#count(entry, 1);
  }

  /** Looks up and marks as most recently used. */
  touch(id: string): T | undefined {
    return this.#lru.get(id);
  }

  /** Looks up without changing the order. */
  peek(id: string): T | undefined {
    return this.#lru.peek(id);
  }

  has(id: string): boolean {
    return this.#lru.has(id);
  }

  delete(id: string): T | undefined {
    const old = this.#lru.peek(id);
    if (!old) return undefined;
    this.#lru.delete(id);
    this.#count(old, -1);
    return old;
  }

  /** Entries, least recently used first. */
  *lru(): IterableIterator<[string, T]> {
    for (const id of this.#lru.rkeys()) yield [id, this.#lru.peek(id)!];
  }
}
