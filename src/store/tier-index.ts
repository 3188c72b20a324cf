/**
 * An in-memory tier's index: sessions in least-recently-used order (lru-cache, without any
 * automatic eviction — the store decides what leaves a tier, asynchronously) with exact byte
 * accounting.
 */
import { LRUCache } from 'lru-cache';

export class TierIndex<T extends { bytes: number }> {
  readonly #lru = new LRUCache<string, T>({ maxSize: Number.MAX_SAFE_INTEGER, sizeCalculation: () => 1 });
  #bytes = 0;

  get bytes(): number {
    return this.#bytes;
  }

  get size(): number {
    return this.#lru.size;
  }

  /** Inserts or replaces, as most recently used. */
  set(id: string, entry: T): void {
    const old = this.#lru.peek(id);
    if (old) this.#bytes -= old.bytes;
    this.#lru.set(id, entry);
    this.#bytes += entry.bytes;
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
    this.#bytes -= old.bytes;
    return old;
  }

  /** Entries, least recently used first. */
  *lru(): IterableIterator<[string, T]> {
    for (const id of this.#lru.rkeys()) yield [id, this.#lru.peek(id)!];
  }
}
