/**
 * The host (warm) tier: sessions encoded in the native arena. An entry is a session's manifest
 * (its chunks, by key) and its own tail block; the chunks live in HostChunks, shared by every
 * entry naming them and counted once. The tier is the one owner of every block it holds: an entry
 * leaves through `drop` (or, never installed, `free`), which frees its tail and its references.
 */
import type { ChunkRef } from './disk-record.js';
import { HostBlock } from './host-block.js';
import { HostChunks } from './host-chunks.js';
import { type SessionMeta, overheadOf } from './session.js';
import { TierIndex } from './tier-index.js';

export interface HostEntry {
  meta: SessionMeta;
  /** The session's chunks in token order: references into the tier's chunks. */
  chunks: ChunkRef[];
  /** The session's own blob (its tail). */
  tail: HostBlock;
  /** What the entry holds on its own: the tail plus its overhead (its chunks count once, in `chunks`). */
  bytes: number;
  /** Bytes of the session's encoding: its chunks and its tail. */
  blobBytes: number;
  overhead: number;
  /** An identical copy is persisted. */
  onDisk: boolean;
}

/**
 * A new entry (not installed) of a session whose `chunks` it already references and whose own
 * blob is `tail`: its byte figures (the tail and the overhead on its own, the chunks once in the tier).
 */
export function hostEntry(meta: SessionMeta, chunks: readonly ChunkRef[], tail: HostBlock, onDisk: boolean): HostEntry {
  const overhead = overheadOf(meta, false);
  const blobBytes = tail.bytes + chunks.reduce((n, c) => n + c.bytes, 0);
  return { meta, chunks: [...chunks], tail, bytes: tail.bytes + overhead, blobBytes, overhead, onDisk };
}

export class HostTier {
  readonly #entries = new TierIndex<HostEntry>();
  /** The chunks the entries (and hot sessions carrying their previous version's) reference. */
  readonly chunks = new HostChunks();

  /** Everything the tier holds: entries (tails, overheads) and chunks, each chunk once. */
  get bytes(): number {
    return this.#entries.bytes + this.chunks.bytes;
  }

  has(id: string): boolean {
    return this.#entries.has(id);
  }

  peek(id: string): HostEntry | undefined {
    return this.#entries.peek(id);
  }

  /** Looks up and marks as most recently used. */
  touch(id: string): HostEntry | undefined {
    return this.#entries.touch(id);
  }

  /** Entries, least recently used first. */
  lru(): IterableIterator<[string, HostEntry]> {
    return this.#entries.lru();
  }

  /** Installs an entry (the tier owns what it holds from now on); an entry it replaces is freed. */
  set(e: HostEntry): void {
    const old = this.#entries.peek(e.meta.id);
    this.#entries.set(e.meta.id, e);
    if (old && old !== e) this.free(old);
  }

  /** Takes a session's entry out and frees it. */
  drop(id: string): void {
    const e = this.#entries.delete(id);
    if (e) this.free(e);
  }

  /** Frees what an entry holds (its tail, its chunk references): entries dropped, or never installed. */
  free(e: HostEntry): void {
    e.tail.free();
    this.chunks.release(e.chunks.map((c) => c.key));
    e.chunks = [];
  }

  /**
   * Takes a reference to chunk `key`: held already, or copied into the arena from `load` (the
   * disk tier's copy). false when neither has it.
   */
  refOrLoad(key: string, load: () => Uint8Array | undefined): boolean {
    if (this.chunks.ref(key)) return true;
    const blob = load();
    if (!blob) return false;
    this.chunks.add(key, HostBlock.copyOf(blob));
    return true;
  }

  /**
   * References every chunk of `chunks` (held already, or copied into the arena from `load(key)`,
   * another tier's copy), or none of them: false when one cannot be had.
   */
  refAll(chunks: readonly ChunkRef[], load: (key: string) => Uint8Array | undefined): boolean {
    const taken: string[] = [];
    for (const c of chunks) {
      if (!this.refOrLoad(c.key, () => load(c.key))) {
        this.chunks.release(taken);
        return false;
      }
      taken.push(c.key);
    }
    return true;
  }

  /** Entries, raw bytes and what they hold (chunks counted once); O(1). */
  totals(): { entries: number; rawBytes: number; storedBytes: number; overheadBytes: number } {
    const t = this.#entries.totals();
    return { ...t, storedBytes: t.storedBytes + this.chunks.bytes };
  }

  /** Frees everything (close; hot sessions have released what they carried). */
  clear(): void {
    for (const [id] of [...this.#entries.lru()]) this.drop(id);
    this.chunks.clear();
  }
}
