/**
 * The disk (cold) tier: encoded cache blobs and their metadata in one LMDB environment, so that
 * spilled sessions survive a restart. The store decides what to spill and what to evict; this
 * class makes each record durable, keeps exact byte accounting and never hands out a record that
 * fails its checks.
 *
 * Layout of the environment (all keys are the session id's UTF-8 bytes, no prefix):
 *
 *   meta    id → metadata record: u8 version | u32le CRC-32C of the JSON | JSON (DiskRecordMeta)
 *   blobs   id → the session's own blob, byte for byte (its tail; the whole cache in version 1)
 *   chunks  key → an encoded chunk (16-byte key), shared by every session whose manifest names it
 *   qmeta   id → quarantine entry (same framing): reason, time, the metadata as it was
 *   qblobs  id → the quarantined blob
 *
 * Behaviour of lmdb 3.5.6 this relies on (checked against its source and by experiment):
 * - `batch(() => { a.put(); b.put() })` queues its writes as one block that lmdb's write thread
 *   executes inside a single transaction, and any failed write aborts that whole transaction
 *   (writer.cpp: resultCode → mdb_txn_abort). `put` uses it because the blob is then copied into
 *   LMDB's pages on the write thread: a 200 MB put blocked the event loop for ~20 ms this way
 *   against ~370 ms inside a transaction callback, which runs on the calling thread.
 * - `childTransaction` is atomic too (a callback that throws aborts it) and is used for the small
 *   read-then-write operations (delete, quarantine). A callback passed to `transaction()` that
 *   throws still commits the writes it made before throwing, so `transaction()` is never used.
 * - Transaction callbacks are not ordered against plain or batched writes queued before them, so
 *   this class runs its writes one at a time (see #write).
 * - With overlapping sync (lmdb's default on Linux) a commit resolves before it is on disk, and
 *   after a failed commit the pending flush promise never settles: `env.close()` then hangs
 *   forever, and so would any write waiting on `flushed`. The environment is therefore opened with
 *   `overlappingSync: false`: a transaction's promise resolves only once LMDB has synced it.
 * - The map grows by itself: lmdb-js patches LMDB to enlarge the map when a transaction needs more
 *   pages, so MDB_MAP_FULL never fires and `mapSize` is only the initial size. `mapSizeBytes` is
 *   therefore enforced here, before writing (see `DiskTierOptions.mapSizeBytes`).
 * - A failed commit rejects every write of that transaction with a generic error whose
 *   `commitError` promise rejects with the real cause right after. With event-turn batching on
 *   (the default), lmdb also rejects an internal promise nobody can reach, which Node reports as
 *   an unhandled rejection; the environment is therefore opened with `eventTurnBatching: false`
 *   (each child transaction is its own unit anyway).
 * - `getBinary` returns a Buffer of its own on every call (a slice for values up to 32 KiB, a
 *   dedicated allocation above), never the shared read buffer or the memory map; `getBinaryFast`
 *   does return the shared buffer, valid until the next read, and grows it to twice the largest
 *   value read. Blobs and chunks up to SHARED_READ_MAX are read with it and copied at once into a
 *   SharedArrayBuffer (see readValue); larger ones with `getBinary`. `getAsync` (reported to
 *   crash on values over ~4 KiB in this version) is not used.
 *
 * The record format (versions, validation, framing) is disk-record.ts. A chunk is written in the
 * same transaction as the first manifest naming it and deleted in the same transaction as the
 * last one; reference counts are not stored, they are counted from the manifests at open (a chunk
 * no manifest names is deleted then).
 *
 * One DiskTier per path per process; LMDB itself allows other processes to read, but the
 * accounting here assumes this instance is the only writer.
 */
import { mkdirSync } from 'node:fs';
import { open as openLmdb } from 'lmdb';
import type { Database, RootDatabase } from 'lmdb';
import { copyBytes, crc32c } from '../binding.js';
import { KvtcError, describeValue as describe } from '../errors.js';
import type { KvtcErrorCode } from '../errors.js';
import {
  type ChunkRef,
  type DiskPutMeta,
  type DiskRecordMeta,
  type QuarantinedRecord,
  type StoredQuarantine,
  cloneMeta,
  decodeMemRecord,
  decodeMeta,
  decodeQuarantine,
  encodeFramed,
  errorText,
  isRecord,
  hex32,
  isExpired,
  normalizeMeta,
  sameGeneration,
  storedMeta,
} from './disk-record.js';
import { ChunkCounts } from './chunk-counts.js';
import { LruOrder } from './lru-order.js';
import { chunksOf, fromMemRecord, type MemRecord, toMemRecord } from './packed-chunks.js';
import { DeadlineHeap } from './deadline-heap.js';
import { MAX_ID_BYTES, validateId } from './session.js';

export { MAX_ID_BYTES };
export type { ChunkRef, DiskPutMeta, DiskRecordMeta, QuarantinedRecord } from './disk-record.js';


/** Result of `DiskTier.get`: the record, or why there is none. Never wrong data as `ok: true`. */
export type DiskGetResult =
  | { ok: true; meta: DiskRecordMeta; blob: Uint8Array }
  | { ok: false; reason: 'missing' }
  | { ok: false; reason: 'corrupt' | 'profile-mismatch' | 'expired'; meta?: DiskRecordMeta; detail: string };

/** Options of `DiskTier.open`. */
export interface DiskTierOptions {
  /** Directory of the LMDB environment; created when missing. */
  path: string;
  /**
   * Bytes of blobs the store's policy aims to keep (sum of storedBytes). Recorded for the store
   * (`capacityBytes`); this class never evicts by itself. Positive integer.
   */
  capacityBytes: number;
  /**
   * Limit on the environment's pages in use, bytes (positive integer, at least 64 KiB): the pages
   * of all B-trees (live records, quarantine, LMDB's free list) plus LMDB's two meta pages, as
   * LMDB's statistics report them. A put whose record (blob pages plus a conservative two pages
   * for its B-tree entries), added to the pages in use and to the puts still in flight, would
   * pass it is refused with E_CAPACITY before anything is written. Also the initial LMDB map
   * size. The data file can exceed it transiently by pages freed in recent transactions that
   * LMDB keeps until no reader needs them (roughly the records replaced or deleted last).
   */
  mapSizeBytes: number;
  /**
   * Bytes the quarantine may hold (its blobs plus entries); `quarantine` drops the oldest
   * quarantined records beyond it, and keeps only the entry of a record larger than it.
   * Non-negative integer. Default min(16 MiB, mapSizeBytes / 8).
   */
  quarantineBytes?: number;
}

/** Totals of the live records, kept up to date on every change (O(1) to read). */
export interface DiskTotals {
  entries: number;
  /** Distinct chunks stored, the references manifests hold to them, and their bytes. */
  chunks: number;
  chunkRefs: number;
  chunkBytes: number;
  /** Bytes that sharing saved: what the references would hold stored once each, minus chunkBytes. */
  chunkBytesSaved: number;
  /** Sum of rawBytes. */
  rawBytes: number;
  /** Blobs plus metadata records: what the records occupy (what capacity limits). */
  storedBytes: number;
  /** The metadata records' part of storedBytes (attachments included). */
  overheadBytes: number;
}


/** Space the environment uses, bytes. */
export interface DiskUsage {
  /** Pages in use (what `mapSizeBytes` limits), in bytes. */
  pageBytes: number;
  /** Size of the data file up to its last used page. */
  fileBytes: number;
  /** `mapSizeBytes`. */
  limitBytes: number;
}

type Bytes = Database<Uint8Array, Uint8Array>;

interface PageStats {
  treeBranchPageCount: number;
  treeLeafPageCount: number;
  overflowPages: number;
}

interface DbStats extends PageStats {
  pageSize: number;
  entryCount: number;
  lastPageNumber: number;
  root: PageStats;
  free: PageStats;
}

/** How `lastAccess` updates from `touch` reach the disk: batched, this long after the first one. */
const ACCESS_FLUSH_MS = 1000;
/** How long a failed write waits for lmdb's `commitError` detail before giving up on it. */
const COMMIT_DETAIL_WAIT_MS = 2000;
const MIN_MAP_SIZE = 64 * 1024;
const MISSING: DiskGetResult = Object.freeze({ ok: false, reason: 'missing' }) as DiskGetResult;
const utf8 = new TextDecoder('utf-8', { fatal: true });

/**
 * The disk tier. Reads are synchronous (LMDB is memory-mapped); writes are asynchronous child
 * transactions committed on lmdb's write thread, each one atomic (metadata and blob together).
 */
export class DiskTier {
  /** Directory of the environment. */
  readonly path: string;
  /** The store's byte budget for this tier (not enforced here). */
  readonly capacityBytes: number;
  /** Hard page limit, bytes (see DiskTierOptions.mapSizeBytes). */
  readonly mapSizeBytes: number;

  readonly #env: RootDatabase<Uint8Array, Uint8Array>;
  readonly #meta: Bytes;
  readonly #blobs: Bytes;
  readonly #chunks: Bytes;
  readonly #qmeta: Bytes;
  readonly #qblobs: Bytes;

  /** Live records with readable metadata: the in-memory mirror of the meta db. */
  readonly #records = new Map<string, MemRecord>();
  /** Live ids whose metadata could not be decoded (or blobs without metadata), with their blob sizes. */
  readonly #broken = new Map<string, number>();
  #bytes = 0;
  #rawBytes = 0;
  /** Bytes of each live record's framed metadata (the record's overhead beside its blob). */
  readonly #metaBytes = new Map<string, number>();
  #overhead = 0;
  /** Stored chunks: references from live manifests, and size. */
  readonly #chunkRefs = new ChunkCounts();
  /** Chunks held for a session above this tier (`pinChunks`): kept at zero references. */
  readonly #chunkPins = new Map<string, number>();
  /** Live records per profile fingerprint. */
  readonly #fingerprints = new Map<string, number>();
  /** Quarantined ids, oldest first, with the bytes each holds (entry plus kept blob). */
  readonly #quarantine = new Map<string, number>();
  #quarantineBytes = 0;
  readonly quarantineLimit: number;

  /** Ids by lastAccess, least recent first (lru-order.ts: O(1) or O(log n) a placement). */
  readonly #order = new LruOrder();

  /** TTL deadlines, earliest first (what `expired` reads). */
  readonly #deadlines = new DeadlineHeap();

  /** Ids whose lastAccess changed since it was last written. */
  readonly #dirtyAccess = new Set<string>();
  #accessTimer: NodeJS.Timeout | undefined;

  /** Tail of the write queue: each write starts once the previous one has settled (see #write). */
  #chain: Promise<void> = Promise.resolve();

  /** Bytes of pages reserved by puts not yet committed (see DiskTierOptions.mapSizeBytes). */
  #reserved = 0;
  readonly #pageSize: number;

  #closed = false;
  #closing: Promise<void> | undefined;
  /** The background removal of unreferenced chunks started at open (close waits for it). */
  #orphanSweep: Promise<void> = Promise.resolve();

  private constructor(
    opts: DiskTierOptions,
    env: RootDatabase<Uint8Array, Uint8Array>,
    dbs: { meta: Bytes; blobs: Bytes; chunks: Bytes; qmeta: Bytes; qblobs: Bytes },
  ) {
    this.path = opts.path;
    this.capacityBytes = opts.capacityBytes;
    this.mapSizeBytes = opts.mapSizeBytes;
    this.quarantineLimit = opts.quarantineBytes ?? Math.min(16 << 20, Math.floor(opts.mapSizeBytes / 8));
    this.#env = env;
    this.#meta = dbs.meta;
    this.#blobs = dbs.blobs;
    this.#chunks = dbs.chunks;
    this.#qmeta = dbs.qmeta;
    this.#qblobs = dbs.qblobs;
    this.#pageSize = statsOf(dbs.meta).pageSize;
    this.#rebuild();
  }

  /**
   * Opens (creating when needed) the environment at `opts.path` and rebuilds the accounting and
   * LRU order from the metadata, so every record written before (by this or an earlier process)
   * is found again. Throws E_OPTIONS for bad options, E_IO when the environment cannot be opened.
   */
  static open(opts: DiskTierOptions): DiskTier {
    if (typeof opts !== 'object' || opts === null) {
      throw new KvtcError('E_OPTIONS', `disk tier options must be an object, got ${String(opts)}`);
    }
    if (typeof opts.path !== 'string' || opts.path.length === 0) {
      throw new KvtcError('E_OPTIONS', `options.path must be a non-empty string, got ${String(opts.path)}`);
    }
    if (!Number.isSafeInteger(opts.capacityBytes) || opts.capacityBytes <= 0) {
      throw new KvtcError('E_OPTIONS', `options.capacityBytes must be a positive integer, got ${String(opts.capacityBytes)}`);
    }
    if (!Number.isSafeInteger(opts.mapSizeBytes) || opts.mapSizeBytes < MIN_MAP_SIZE) {
      throw new KvtcError('E_OPTIONS', `options.mapSizeBytes must be an integer of at least ${MIN_MAP_SIZE}, got ${String(opts.mapSizeBytes)}`);
    }
    if (opts.quarantineBytes !== undefined && (!Number.isSafeInteger(opts.quarantineBytes) || opts.quarantineBytes < 0)) {
      throw new KvtcError('E_OPTIONS', `options.quarantineBytes must be a non-negative integer, got ${String(opts.quarantineBytes)}`);
    }
    let env: RootDatabase<Uint8Array, Uint8Array> | undefined;
    try {
      mkdirSync(opts.path, { recursive: true });
      env = openLmdb<Uint8Array, Uint8Array>({
        path: opts.path,
        // lmdb-js treats a path with an extension as a file name; this tier always owns a directory.
        noSubdir: false,
        mapSize: opts.mapSizeBytes,
        maxDbs: 8,
        // See the file comment: with batching on, a failed commit leaks an unhandled rejection.
        eventTurnBatching: false,
        // See the file comment: commit = durable, and close() still works after a failed commit.
        overlappingSync: false,
      });
      const o = { encoding: 'binary', keyEncoding: 'binary' } as const;
      const dbs = {
        meta: env.openDB<Uint8Array, Uint8Array>('meta', o),
        blobs: env.openDB<Uint8Array, Uint8Array>('blobs', o),
        chunks: env.openDB<Uint8Array, Uint8Array>('chunks', o),
        qmeta: env.openDB<Uint8Array, Uint8Array>('qmeta', o),
        qblobs: env.openDB<Uint8Array, Uint8Array>('qblobs', o),
      };
      return new DiskTier(opts, env, dbs);
    } catch (err) {
      if (env) void env.close().catch(() => undefined);
      if (err instanceof KvtcError) throw err;
      throw new KvtcError('E_IO', `disk tier at ${opts.path} could not be opened: ${errorText(err)}`, { cause: err });
    }
  }

  /** Sum of storedBytes of the live records (unreadable ones count with their blob's size). */
  get bytes(): number {
    return this.#bytes;
  }

  /**
   * Bytes the live records occupy: `bytes` plus their metadata records (attachments included).
   * What the store's capacity policy limits.
   */
  get footprintBytes(): number {
    return this.#bytes + this.#overhead + this.#chunkRefs.totals().bytes;
  }

  /** Totals of the live records (unreadable ones count with their blob's size); chunks count once. */
  totals(): DiskTotals {
    const c = this.#chunkRefs.totals();
    return {
      entries: this.count,
      rawBytes: this.#rawBytes,
      storedBytes: this.#bytes + this.#overhead + c.bytes,
      overheadBytes: this.#overhead,
      chunks: c.chunks,
      chunkRefs: c.refs,
      chunkBytes: c.bytes,
      chunkBytesSaved: c.saved,
    };
  }

  /** Whether a chunk is stored. */
  hasChunk(key: string): boolean {
    return this.#chunkRefs.has(key);
  }

  /**
   * A stored chunk's bytes (a fresh copy), or undefined when it is not stored or its size is not
   * the recorded one. Its content is checked by the decoder (every blob carries a checksum).
   */
  getChunk(key: string): Uint8Array | undefined {
    this.#assertOpen();
    const bytes = this.#chunkRefs.bytesOf(key);
    if (bytes === undefined) return undefined;
    try {
      const buf = readValue(this.#chunks, chunkKey(key), bytes);
      if (buf === undefined || buf.byteLength !== bytes) return undefined;
      return buf;
    } catch {
      return undefined;
    }
  }

  /**
   * Holds chunks for a session above this tier that was made from them (a grown session put again
   * reuses them when it is demoted): a held chunk is not deleted when its last manifest goes.
   * In memory only; `unpinChunks` releases (and deletes what nothing references any more).
   */
  pinChunks(keys: readonly string[]): void {
    for (const k of keys) this.#chunkPins.set(k, (this.#chunkPins.get(k) ?? 0) + 1);
  }

  async unpinChunks(keys: readonly string[]): Promise<void> {
    const free: string[] = [];
    for (const k of keys) {
      const n = (this.#chunkPins.get(k) ?? 1) - 1;
      if (n > 0) this.#chunkPins.set(k, n);
      else {
        this.#chunkPins.delete(k);
        if (this.#chunkRefs.has(k) && this.#chunkRefs.refs(k) === 0) free.push(k);
      }
    }
    if (free.length === 0 || this.#closed) return;
    await this.#txn('disk chunk release', () => {
      const gone: string[] = [];
      for (const k of free) {
        if (!this.#chunkRefs.has(k) || this.#chunkRefs.refs(k) !== 0 || this.#chunkPins.has(k)) continue;
        this.#chunks.removeSync(chunkKey(k));
        gone.push(k);
      }
      return gone;
    }, (gone) => {
      for (const k of gone) this.#dropChunk(k);
    });
  }

  /** Quarantined records and the bytes they hold (bounded by quarantineLimit). */
  quarantineTotals(): { entries: number; bytes: number } {
    return { entries: this.#quarantine.size, bytes: this.#quarantineBytes };
  }

  /** Live records written with a fingerprint other than `fingerprint`, by fingerprint. */
  foreignFingerprints(fingerprint: string): Map<string, number> {
    const out = new Map<string, number>();
    for (const [fp, n] of this.#fingerprints) if (fp !== fingerprint) out.set(fp, n);
    return out;
  }

  /** When the live record `id` was put (its version, ms since the epoch); undefined for none. No copy. */
  createdAtOf(id: string): number | undefined {
    return this.#records.get(id)?.createdAt;
  }

  /** The fingerprint of a live, readable record; undefined for none (or an unreadable one). */
  fingerprintOf(id: string): string | undefined {
    return this.#records.get(id)?.fingerprint;
  }

  /**
   * A token naming this version of a record (undefined when there is none): a policy decision
   * made for one version compares it before acting, so it never applies to a replacement.
   */
  generation(id: string): string | undefined {
    const m = this.#records.get(id);
    if (m) return `${m.checksum}:${m.createdAt}:${m.storedBytes}`;
    return this.#broken.has(id) ? 'unreadable' : undefined;
  }

  /** True when the live record `id` has a TTL that has run out at `now`. */
  isExpired(id: string, now: number): boolean {
    const m = this.#records.get(id);
    return m !== undefined && isExpired(m, now);
  }

  /** Number of live records, unreadable ones included (see `unreadable`). */
  get count(): number {
    return this.#records.size + this.#broken.size;
  }

  /**
   * Stores (or replaces) a record: blob and metadata in one transaction. Resolves with the stored
   * metadata once the transaction is committed and synced to disk (the accounting changes then).
   * On the calling thread it only validates and computes the CRC-32C (~15 ms per 100 MB); lmdb's
   * write thread copies the blob, which is read in place: do not modify, transfer or reuse it
   * until the promise settles. Rejects with E_OPTIONS (bad id or metadata), E_LAYOUT (bad
   * layout), E_CAPACITY (over `mapSizeBytes`, or the write failed: full disk, file-size limit,
   * I/O error; the cause is attached) or E_CLOSED. A rejected put leaves the previous record, if
   * any, untouched.
   */
  async put(input: DiskPutMeta, blob: Uint8Array): Promise<DiskRecordMeta> {
    return (await this.putMany([{ meta: input, blob }]))[0]!;
  }

  /**
   * Stores several records in one transaction (all or none): what `put` does for one, for many
   * at the cost of one synced commit. Ids must be distinct. Same errors as `put`.
   */
  async putMany(items: readonly { meta: DiskPutMeta; blob: Uint8Array; chunkBlobs?: ReadonlyMap<string, Uint8Array> }[]): Promise<DiskRecordMeta[]> {
    this.#assertOpen();
    if (!Array.isArray(items)) throw new KvtcError('E_OPTIONS', `items must be an array, got ${describe(items)}`);
    const prepared = items.map((it) => this.#prepare(it.meta, it.blob, it.chunkBlobs));
    if (new Set(prepared.map((p) => p.meta.id)).size !== prepared.length) throw new KvtcError('E_OPTIONS', 'putMany ids must be distinct');
    const need = prepared.reduce((n, p) => n + p.need, 0);
    const freed = prepared.reduce((n, p) => n + p.freed, 0);
    const inUse = this.#pagesInUse();
    if (inUse + this.#reserved + need - freed > this.mapSizeBytes) {
      const what = prepared.length === 1 ? `record '${prepared[0]!.meta.id}' (${prepared[0]!.meta.storedBytes} bytes, ~${need} bytes of pages)` : `${prepared.length} records (~${need} bytes of pages)`;
      throw new KvtcError(
        'E_CAPACITY',
        `disk tier is full: ${what} does not fit: ${inUse} bytes of pages in use and ${this.#reserved} reserved by puts in flight, mapSizeBytes ${this.mapSizeBytes}`,
      );
    }
    this.#reserved += need;
    try {
      const what = prepared.length === 1 ? `disk put of '${prepared[0]!.meta.id}'` : `disk put of ${prepared.length} records`;
      let plan: ChunkPlan = { write: [], remove: [] };
      await this.#write(what, 'E_CAPACITY', () => {
        // Planned here, after every earlier write applied: which chunks are new, which lose their last reference.
        plan = this.#planChunks(prepared.map((p) => ({ id: p.meta.id, chunks: p.meta.chunks ?? [], blobs: p.chunkBlobs })));
        return this.#blobs.batch(() => {
          // One block, one transaction; lmdb's write thread copies the blobs (see the file comment).
          for (const [k, blob] of plan.write) void this.#chunks.put(chunkKey(k), blob);
          for (const p of prepared) {
            void this.#blobs.put(p.key, p.blob);
            void this.#meta.put(p.key, p.record);
          }
          for (const k of plan.remove) void this.#chunks.remove(chunkKey(k));
        });
      }, () => {
        for (const p of prepared) this.#applyPut(p.meta, p.record.length);
        for (const k of plan.remove) this.#dropChunk(k);
      });
    } finally {
      this.#reserved -= need;
    }
    return prepared.map((p) => cloneMeta(p.meta));
  }

  /**
   * The chunk writes and removals of replacing the manifests of `puts`: a chunk not stored is
   * written (its bytes must be given), a chunk only the replaced manifests named (and nothing
   * pins) is removed. Pure: the accounting changes when the write is applied.
   */
  #planChunks(puts: { id: string; chunks: readonly ChunkRef[]; blobs: ReadonlyMap<string, Uint8Array> | undefined }[]): ChunkPlan {
    const delta = new Map<string, number>();
    const write = new Map<string, Uint8Array>();
    for (const p of puts) {
      for (const c of chunksOf(this.#records.get(p.id))) delta.set(c.key, (delta.get(c.key) ?? 0) - 1);
      for (const c of p.chunks) {
        delta.set(c.key, (delta.get(c.key) ?? 0) + 1);
        if (this.#chunkRefs.has(c.key) || write.has(c.key)) continue;
        const blob = p.blobs?.get(c.key);
        if (!blob || blob.byteLength !== c.bytes) throw new KvtcError('E_INTERNAL', `disk put of '${p.id}': chunk ${c.key} is not stored and its ${c.bytes} bytes were not given`);
        write.set(c.key, blob);
      }
    }
    const remove: string[] = [];
    for (const [k, d] of delta) if (d < 0 && this.#chunkRefs.refs(k) + d <= 0 && !this.#chunkPins.has(k)) remove.push(k);
    return { write: [...write], remove };
  }

  /** Validates one record of a put and sizes its pages (the check of mapSizeBytes happens per put). */
  #prepare(input: DiskPutMeta, blob: Uint8Array, chunkBlobs?: ReadonlyMap<string, Uint8Array>) {
    if (typeof input !== 'object' || input === null) {
      throw new KvtcError('E_OPTIONS', `meta must be an object, got ${String(input)}`);
    }
    const key = idKey(input.id);
    if (!(blob instanceof Uint8Array)) {
      throw new KvtcError('E_OPTIONS', `blob must be a Uint8Array, got ${describe(blob)}`);
    }
    const meta = normalizeMeta(input, blob.byteLength, crc32c(blob) >>> 0);
    if (blob.byteLength > this.mapSizeBytes) {
      throw new KvtcError('E_CAPACITY', `record '${meta.id}' holds ${blob.byteLength} bytes, more than the disk tier's mapSizeBytes ${this.mapSizeBytes}`);
    }
    const record = encodeFramed(storedMeta(meta));
    // Reserved at call time, so puts waiting in the write queue count too. The metadata record
    // counts like the blob: an attachment can make it the larger of the two.
    const pagesOf = (blobBytes: number, metaBytes: number) =>
      (blobPages(blobBytes, key.length, this.#pageSize) + blobPages(metaBytes, key.length, this.#pageSize)) * this.#pageSize;
    // New chunks' pages count as well (conservatively: whether or not an earlier put stores them first).
    let chunkPages = 0;
    for (const c of meta.chunks ?? []) if (!this.#chunkRefs.has(c.key)) chunkPages += blobPages(c.bytes, 16, this.#pageSize) * this.#pageSize;
    const need = pagesOf(meta.storedBytes, record.length) + chunkPages + 2 * this.#pageSize;
    const prev = this.#records.get(meta.id);
    const freed = prev ? pagesOf(prev.storedBytes, this.#metaBytes.get(meta.id) ?? 0) : 0;
    if (need > this.mapSizeBytes) {
      throw new KvtcError('E_CAPACITY', `record '${meta.id}' needs ~${need} bytes of pages (blob ${meta.storedBytes}, metadata ${record.length}), more than the disk tier's mapSizeBytes ${this.mapSizeBytes}`);
    }
    return { key, meta, blob, record, need, freed, chunkBlobs };
  }

  /**
   * Reads and verifies a record, synchronously. Checks, in order: it exists; its metadata decodes
   * (else 'corrupt'); it has not expired at `now` ('expired', see `expired`); its fingerprint is
   * `expectFingerprint` ('profile-mismatch'); its blob exists with storedBytes bytes and the
   * recorded CRC-32C ('corrupt'). Never throws for bad record contents; throws E_CLOSED after
   * close. The blob is a fresh Uint8Array owned by the caller. Does not touch the record.
   */
  get(id: string, expectFingerprint: string, now: number = Date.now()): DiskGetResult {
    this.#assertOpen();
    const key = tryIdKey(id);
    if (!key) return MISSING;
    let meta: DiskRecordMeta | undefined;
    try {
      const raw = this.#meta.getBinary(key);
      if (raw === undefined) {
        return this.#blobKeyExists(key) ? { ok: false, reason: 'corrupt', detail: `record '${id}' has a blob but no metadata` } : MISSING;
      }
      const decoded = decodeMeta(raw, id);
      if (!decoded.ok) return { ok: false, reason: 'corrupt', detail: `record '${id}': ${decoded.detail}` };
      meta = decoded.meta;
      // touch() is persisted lazily: the in-memory lastAccess of the same record is the newer one.
      const mem = this.#records.get(id);
      if (mem && sameGeneration(mem, meta)) meta.lastAccess = mem.lastAccess;
      if (isExpired(meta, now)) {
        return { ok: false, reason: 'expired', meta, detail: `record '${id}' expired at ${meta.lastAccess + meta.ttlMs} (now ${now})` };
      }
      if (meta.fingerprint !== expectFingerprint) {
        return { ok: false, reason: 'profile-mismatch', meta, detail: `record '${id}' was encoded with profile ${meta.fingerprint}, expected ${String(expectFingerprint)}` };
      }
      const blob = readValue(this.#blobs, key, meta.storedBytes);
      if (blob === undefined) return { ok: false, reason: 'corrupt', meta, detail: `record '${id}' has metadata but no blob` };
      if (blob.byteLength !== meta.storedBytes) {
        return { ok: false, reason: 'corrupt', meta, detail: `record '${id}' blob holds ${blob.byteLength} bytes, metadata says ${meta.storedBytes}` };
      }
      const crc = crc32c(blob) >>> 0;
      if (crc !== meta.checksum) {
        return { ok: false, reason: 'corrupt', meta, detail: `record '${id}' blob CRC-32C ${hex32(crc)} != recorded ${hex32(meta.checksum)}` };
      }
      return { ok: true, meta, blob };
    } catch (err) {
      const r: DiskGetResult = { ok: false, reason: 'corrupt', detail: `record '${id}' could not be read: ${errorText(err)}` };
      if (meta) r.meta = meta;
      return r;
    }
  }

  /** Metadata of a live record (a copy, with the latest in-memory lastAccess), or undefined. */
  meta(id: string): DiskRecordMeta | undefined {
    this.#assertOpen();
    const m = this.#records.get(id);
    return m ? cloneMeta(fromMemRecord(m)) : undefined;
  }

  /** True when `id` is a live record (unreadable ones included). */
  has(id: string): boolean {
    this.#assertOpen();
    return this.#records.has(id) || this.#broken.has(id);
  }

  /**
   * Records an access: updates lastAccess and the LRU order in memory at once (O(1) when accesses
   * come in time order). The new lastAccess reaches the disk lazily, batched about a second later
   * and on close, best effort: after a crash a record may come back with an older lastAccess, so
   * it may expire (TTL) or be evicted earlier than it would have. Unknown ids are ignored.
   */
  touch(id: string, lastAccess: number): void {
    this.#assertOpen();
    if (typeof lastAccess !== 'number' || !Number.isFinite(lastAccess)) {
      throw new KvtcError('E_OPTIONS', `lastAccess must be a finite number of ms, got ${String(lastAccess)}`);
    }
    const m = this.#records.get(id);
    if (!m) return;
    m.lastAccess = lastAccess + 0; // no -0 (see normalizeMeta)
    this.#place(id, m.lastAccess);
    this.#dirtyAccess.add(id);
    if (!this.#accessTimer) {
      this.#accessTimer = setTimeout(() => {
        this.#accessTimer = undefined;
        void this.#flushAccess();
      }, ACCESS_FLUSH_MS);
      // A pending access flush must not keep the process alive; close() flushes anyway.
      this.#accessTimer.unref();
    }
  }

  /**
   * Removes a record (metadata and blob). Resolves true when something was removed, once the
   * removal is committed and synced. Rejects with E_IO when the write fails, E_CLOSED after close.
   */
  async delete(id: string): Promise<boolean> {
    this.#assertOpen();
    const key = tryIdKey(id);
    if (!key) return false;
    let remove: string[] = [];
    return this.#txn(`disk delete of '${id}'`, () => {
      remove = this.#planChunks([{ id, chunks: [], blobs: undefined }]).remove;
      const a = this.#meta.removeSync(key);
      const b = this.#blobs.removeSync(key);
      for (const k of remove) this.#chunks.removeSync(chunkKey(k));
      return a || b;
    }, () => {
      this.#forget(id);
      for (const k of remove) this.#dropChunk(k);
    });
  }

  /**
   * Moves a record out of the live set into the quarantine dbs, with `reason` (for records that
   * failed a check: `get` said 'corrupt'). Works whatever state the record is in (unreadable
   * metadata, missing blob, blob without metadata); a no-op when there is nothing under `id`.
   * The live accounting drops the record; the quarantine is not counted in `bytes` or `count` but
   * its pages count against `mapSizeBytes` until `clearQuarantine`. Rejects with E_IO on failure.
   */
  async quarantine(id: string, reason: string): Promise<void> {
    this.#assertOpen();
    if (typeof reason !== 'string') throw new KvtcError('E_OPTIONS', `reason must be a string, got ${describe(reason)}`);
    const key = tryIdKey(id);
    if (!key) return;
    let held = 0;
    const dropped: string[] = [];
    let remove: string[] = [];
    await this.#txn(`disk quarantine of '${id}'`, () => {
      // The quarantined manifest no longer holds its chunks (the entry keeps their keys, for inspection).
      remove = this.#planChunks([{ id, chunks: [], blobs: undefined }]).remove;
      for (const k of remove) this.#chunks.removeSync(chunkKey(k));
      const rawMeta = this.#meta.getBinary(key);
      const blob = this.#blobs.getBinary(key);
      if (rawMeta === undefined && blob === undefined) return false;
      const decoded = rawMeta ? decodeMeta(rawMeta, id) : undefined;
      const entry: StoredQuarantine = {
        id,
        reason,
        quarantinedAt: Date.now(),
        meta: decoded?.ok ? storedMeta(decoded.meta) : null,
        rawMeta: rawMeta && !decoded?.ok ? Buffer.from(rawMeta).toString('base64') : null,
        blobBytes: blob ? blob.byteLength : null,
        blobKept: true,
      };
      // Bounded: the blob is kept only when it fits the limit, and the oldest entries make room.
      const entryBytes = (e: StoredQuarantine) => encodeFramed(e).length;
      if (blob && entryBytes(entry) + blob.byteLength > this.quarantineLimit) entry.blobKept = false;
      const framed = encodeFramed(entry);
      held = framed.length + (entry.blobKept && blob ? blob.byteLength : 0);
      let total = this.#quarantineBytes - (this.#quarantine.get(id) ?? 0);
      for (const [old, bytes] of this.#quarantine) {
        if (total + held <= this.quarantineLimit) break;
        if (old === id) continue;
        const k = idKey(old);
        this.#qmeta.removeSync(k);
        this.#qblobs.removeSync(k);
        total -= bytes;
        dropped.push(old);
      }
      this.#qmeta.putSync(key, framed);
      if (blob && entry.blobKept) this.#qblobs.putSync(key, blob);
      else this.#qblobs.removeSync(key);
      this.#meta.removeSync(key);
      this.#blobs.removeSync(key);
      return true;
    }, (moved) => {
      this.#forget(id);
      for (const k of remove) this.#dropChunk(k);
      if (!moved) return;
      for (const old of dropped) this.#unquarantine(old);
      this.#unquarantine(id);
      this.#quarantine.set(id, held);
      this.#quarantineBytes += held;
    });
  }

  /** The quarantined records (for inspection). */
  quarantined(): QuarantinedRecord[] {
    this.#assertOpen();
    const out: QuarantinedRecord[] = [];
    for (const { key, value } of this.#qmeta.getRange({})) {
      const id = keyId(key);
      if (id === undefined) continue;
      const q = decodeQuarantine(value, id);
      out.push(q ?? { id, reason: '(unreadable quarantine entry)', quarantinedAt: 0 });
    }
    return out;
  }

  /** Deletes every quarantined record; resolves with how many there were. */
  async clearQuarantine(): Promise<number> {
    this.#assertOpen();
    return this.#txn('disk quarantine clear', () => {
      const keys = [...this.#qmeta.getKeys({})].map((k) => Buffer.from(k));
      const blobKeys = [...this.#qblobs.getKeys({})].map((k) => Buffer.from(k));
      for (const k of keys) this.#qmeta.removeSync(k);
      for (const k of blobKeys) this.#qblobs.removeSync(k);
      return keys.length;
    }, () => {
      this.#quarantine.clear();
      this.#quarantineBytes = 0;
    });
  }

  /** Every live record with readable metadata (copies). `count - list().length` = `unreadable().length`. */
  list(): DiskRecordMeta[] {
    this.#assertOpen();
    return [...this.#records.values()].map((m) => cloneMeta(fromMemRecord(m)));
  }

  /**
   * The sessions put with token ids, for the prefix index at open: without copying every record
   * (a million chunk references). The token ids are the tier's own: read, never modify them.
   */
  *prefixSessions(fingerprint: string): Generator<{ id: string; namespace: string; tokenIds: Int32Array }> {
    this.#assertOpen();
    for (const m of this.#records.values()) {
      if (m.tokenIds && m.fingerprint === fingerprint) yield { id: m.id, namespace: m.namespace ?? '', tokenIds: m.tokenIds };
    }
  }

  /**
   * Live ids whose metadata could not be decoded when the tier was opened, or blobs found without
   * metadata. `get` reports them 'corrupt'; they come first in `lruOrder` so eviction clears them.
   */
  unreadable(): string[] {
    this.#assertOpen();
    return [...this.#broken.keys()];
  }

  /**
   * Ids least recently used first, by lastAccess (ties in order of arrival): unreadable records
   * first, pinned records left out. O(n log n): for listings and tests, not per operation.
   */
  lruOrder(): string[] {
    this.#assertOpen();
    return [...this.#broken.keys(), ...this.#order.ids().filter((id) => !this.#records.get(id)?.pinned)];
  }

  /**
   * The first id of `lruOrder()` not in `skip`, without building the list: O(log n) per call
   * (the store asks once per eviction), whatever order the accesses came in.
   */
  lruVictim(skip?: ReadonlySet<string>): string | undefined {
    this.#assertOpen();
    for (const id of this.#broken.keys()) if (!skip?.has(id)) return id;
    return this.#order.first((id) => !this.#records.get(id)?.pinned && !skip?.has(id));
  }


  /**
   * Ids of records expired at `now`: ttlMs > 0 and now >= lastAccess + ttlMs (the TTL runs from
   * the last access, so touching a record extends it). Pinned records expire too; the store
   * decides what to do with them.
   */
  expired(now: number): string[] {
    this.#assertOpen();
    if (typeof now !== 'number' || Number.isNaN(now)) throw new KvtcError('E_OPTIONS', `now must be a number of ms, got ${String(now)}`);
    const deadline = (id: string) => {
      const m = this.#records.get(id);
      return m && m.ttlMs > 0 ? m.lastAccess + m.ttlMs : undefined;
    };
    const out = this.#deadlines.due(now, deadline);
    this.#deadlines.compact(this.#liveDeadlines(), this.#records.size);
    return out;
  }

  *#liveDeadlines(): Generator<[string, number]> {
    for (const m of this.#records.values()) if (m.ttlMs > 0) yield [m.id, m.lastAccess + m.ttlMs];
  }

  /** Pages in use, file size and limit (reads LMDB's statistics). */
  usage(): DiskUsage {
    this.#assertOpen();
    const s = statsOf(this.#meta);
    return { pageBytes: this.#pagesInUse(), fileBytes: (s.lastPageNumber + 1) * s.pageSize, limitBytes: this.mapSizeBytes };
  }

  /**
   * Writes pending lastAccess updates, waits for every write in flight and closes the
   * environment. Later calls throw E_CLOSED; calling close again returns the same promise.
   */
  close(): Promise<void> {
    this.#closing ??= (async () => {
      this.#closed = true;
      if (this.#accessTimer) clearTimeout(this.#accessTimer);
      this.#accessTimer = undefined;
      await this.#flushAccess();
      await this.#orphanSweep;
      await this.#chain;
      await this.#env.close();
    })();
    return this.#closing;
  }

  // ---------------------------------------------------------------------------------------------

  #assertOpen(): void {
    if (this.#closed) throw new KvtcError('E_CLOSED', `disk tier at ${this.path} is closed`);
  }

  /**
   * Runs writes one at a time, in call order. lmdb does not order transaction callbacks against
   * plain or batched writes: every callback queued while a transaction is pending runs when the
   * first one is reached, ahead of writes queued between them (put a, delete a, put a, delete a
   * ran the second delete before the second put). Serializing here keeps call order = commit
   * order, lets a transaction read what every earlier call wrote, and lets `apply` update the
   * in-memory state right after its own commit. The environment syncs every commit before
   * resolving it, so the returned promise resolves once the write is durable.
   */
  #write<R>(what: string, failCode: KvtcErrorCode, start: () => Promise<R>, apply: (result: R) => void): Promise<R> {
    const task = this.#chain.then(async () => {
      let result: R;
      try {
        result = await start();
      } catch (err) {
        throw await writeFailure(failCode, what, err);
      }
      apply(result);
      return result;
    });
    this.#chain = task.then(noop, noop);
    return task;
  }

  /** `#write` of a child transaction: atomic, an exception in `body` discards all its writes. */
  #txn<R>(what: string, body: () => R, apply: (result: R) => void): Promise<R> {
    return this.#write(what, 'E_IO', () => this.#env.childTransaction(body), apply);
  }

  #applyPut(meta: DiskRecordMeta, metaBytes: number): void {
    this.#forget(meta.id);
    this.#add(toMemRecord(meta), metaBytes);
  }

  /** Adds a readable live record to the in-memory mirror and the totals. */
  #add(meta: MemRecord, metaBytes: number): void {
    this.#records.set(meta.id, meta);
    this.#metaBytes.set(meta.id, metaBytes);
    this.#bytes += meta.storedBytes;
    this.#overhead += metaBytes;
    this.#rawBytes += meta.rawBytes;
    this.#fingerprints.set(meta.fingerprint, (this.#fingerprints.get(meta.fingerprint) ?? 0) + 1);
    this.#place(meta.id, meta.lastAccess);
    if (meta.packedChunks) this.#chunkRefs.refPacked(meta.packedChunks);
  }

  /** Forgets a chunk removed from the chunks db. */
  #dropChunk(key: string): void {
    this.#chunkRefs.drop(key);
  }

  #unquarantine(id: string): void {
    const bytes = this.#quarantine.get(id);
    if (bytes === undefined) return;
    this.#quarantine.delete(id);
    this.#quarantineBytes -= bytes;
  }

  #forget(id: string): void {
    const prev = this.#records.get(id);
    if (prev) {
      const metaBytes = this.#metaBytes.get(id) ?? 0;
      this.#bytes -= prev.storedBytes;
      this.#overhead -= metaBytes;
      this.#rawBytes -= prev.rawBytes;
      const n = (this.#fingerprints.get(prev.fingerprint) ?? 1) - 1;
      if (n > 0) this.#fingerprints.set(prev.fingerprint, n);
      else this.#fingerprints.delete(prev.fingerprint);
      this.#metaBytes.delete(id);
      this.#records.delete(id);
      // References only: a chunk at zero stays counted until its removal is applied (#dropChunk).
      if (prev.packedChunks) this.#chunkRefs.unrefPacked(prev.packedChunks);
    }
    const broken = this.#broken.get(id);
    if (broken !== undefined) {
      this.#bytes -= broken;
      this.#broken.delete(id);
    }
    this.#order.delete(id);
    this.#dirtyAccess.delete(id);
  }

  /** Moves `id` to the most-recent end; the order stays sorted as long as accesses come in time order. */
  #place(id: string, lastAccess: number): void {
    const m = this.#records.get(id);
    if (m && m.ttlMs > 0) this.#deadlines.push(lastAccess + m.ttlMs, id);
    this.#order.place(id, lastAccess);
  }

  /** Bytes of pages in use: every B-tree (root, free list, the four dbs) and the two meta pages, as last committed. */
  #pagesInUse(): number {
    const pages = (s: PageStats): number => s.treeBranchPageCount + s.treeLeafPageCount + s.overflowPages;
    const m = statsOf(this.#meta);
    let n = 2 + pages(m.root) + pages(m.free) + pages(m);
    for (const db of [this.#blobs, this.#chunks, this.#qmeta, this.#qblobs]) n += pages(statsOf(db));
    return n * m.pageSize;
  }

  /** Existence of a blob without reading it (getBinaryFast would grow lmdb's shared buffer to the blob's size). */
  #blobKeyExists(key: Buffer): boolean {
    for (const k of this.#blobs.getKeys({ start: key, limit: 1 })) return Buffer.compare(Buffer.from(k), key) === 0;
    return false;
  }

  /** Writes the lastAccess of touched records whose metadata on disk is still the same record. */
  async #flushAccess(): Promise<void> {
    if (this.#dirtyAccess.size === 0) return;
    const ids = [...this.#dirtyAccess];
    this.#dirtyAccess.clear();
    try {
      await this.#txn('disk lastAccess flush', () => {
        for (const id of ids) {
          const mem = this.#records.get(id);
          const key = tryIdKey(id);
          if (!mem || !key) continue;
          const raw = this.#meta.getBinary(key);
          if (raw === undefined) continue;
          const decoded = decodeMeta(raw, id);
          if (!decoded.ok || !sameGeneration(mem, decoded.meta) || decoded.meta.lastAccess === mem.lastAccess) continue;
          decoded.meta.lastAccess = mem.lastAccess;
          this.#meta.putSync(key, encodeFramed(storedMeta(decoded.meta)));
        }
        return true;
      }, () => undefined);
    } catch {
      // Best effort by contract: a lost lastAccess only makes a record look older.
    }
  }

  /** Loads the accounting and LRU order from the meta db (and finds blobs without metadata). */
  #rebuild(): void {
    const loaded: { meta: MemRecord; bytes: number }[] = [];
    for (const { key, value } of this.#meta.getRange({})) {
      const id = keyId(key);
      if (id === undefined) continue;
      const decoded = decodeMemRecord(value, id);
      if (decoded.ok) loaded.push({ meta: decoded.meta, bytes: value.length });
      else this.#broken.set(id, 0);
    }
    loaded.sort((a, b) => a.meta.lastAccess - b.meta.lastAccess);
    this.#chunkRefs.reserve(statsOf(this.#chunks).entryCount);
    for (const { meta, bytes } of loaded) this.#add(meta, bytes);
    // The quarantine's size, oldest first (the order `quarantine` drops them in).
    const q: { id: string; at: number; bytes: number }[] = [];
    for (const { key, value } of this.#qmeta.getRange({})) {
      const id = keyId(key);
      if (id === undefined) continue;
      const entry = decodeQuarantine(value, id);
      const kept = entry?.blobKept !== false ? (entry?.blobBytes ?? 0) : 0;
      q.push({ id, at: entry?.quarantinedAt ?? 0, bytes: value.length + kept });
    }
    q.sort((a, b) => a.at - b.at);
    for (const e of q) {
      this.#quarantine.set(e.id, e.bytes);
      this.#quarantineBytes += e.bytes;
    }
    // Keys are copied out first: reads reuse lmdb's key buffer.
    for (const k of [...this.#blobs.getKeys({})].map((x) => Buffer.from(x))) {
      const id = keyId(k);
      if (id === undefined || this.#records.has(id)) continue;
      // Unreadable metadata or none at all: count the blob's real size, it occupies the disk.
      this.#broken.set(id, this.#blobs.getBinary(k)?.byteLength ?? 0);
    }
    for (const size of this.#broken.values()) this.#bytes += size;
    // Chunks no manifest names are removed in the background (see #sweepOrphans).
    this.#orphanSweep = this.#sweepOrphans();
  }

  /**
   * Removes chunks no manifest names: left when the process died holding chunks of a session's
   * previous version (pins are in memory only). Runs after open in slices, off the open path (a
   * million chunk keys take ~1 s to scan); a chunk a put references meanwhile is kept (re-checked
   * inside the removal's transaction).
   */
  async #sweepOrphans(): Promise<void> {
    // A slice holds the event loop a quarter of a millisecond at most, and the next one waits
    // PAUSE_MS: the sweep takes a few percent of the loop, so the operations of the first seconds
    // after opening a large store (a million chunk keys: ~1000 slices) are barely slowed.
    const SLICE_MS = 0.25;
    const PAUSE_MS = 10;
    let start: Buffer | undefined;
    for (;;) {
      await new Promise<void>((resolve) => (start === undefined ? setImmediate(resolve) : setTimeout(resolve, PAUSE_MS)));
      if (this.#closed && start !== undefined) return; // the first slice always runs (a small store's whole sweep)
      const found: Buffer[] = [];
      let last: Buffer | undefined;
      let done = true;
      const t0 = performance.now();
      let seen = 0;
      for (const k of this.#chunks.getKeys(start ? { start } : {})) {
        // lmdb reuses the key's buffer: it is read here and copied only when kept.
        const key = k as Buffer;
        if (start && seen === 0 && key.equals(start)) continue; // the slice starts after the last key seen
        seen++;
        if (!this.#chunkRefs.hasKeyBytes(key)) found.push(Buffer.from(key));
        if ((seen & 255) === 0 && performance.now() - t0 > SLICE_MS) {
          last = Buffer.from(key);
          done = false;
          break;
        }
      }
      if (found.length > 0) {
        await this.#txn('disk orphan chunk removal', () => {
          for (const k of found) {
            if (!this.#chunkRefs.hasKeyBytes(k) && !this.#chunkPins.has(k.toString('hex'))) this.#chunks.removeSync(k);
          }
          return true;
        }, () => undefined).catch(() => undefined);
      }
      if (done || !last) return;
      start = last;
    }
  }
}

interface ChunkPlan {
  write: [string, Uint8Array][];
  remove: string[];
}

/** The 16-byte LMDB key of a chunk key (32 hex digits). */
/**
 * Values up to this size are read through lmdb's reused read buffer (which then grows to at most
 * twice this) into a SharedArrayBuffer: V8 does not count shared buffers as external memory, so
 * reading a session back from disk does not drive the main thread's garbage collector (a Buffer
 * per read did: a full mark-compact every ~8 MB read).
 */
const SHARED_READ_MAX = 4 << 20;

/**
 * A value's bytes in memory of their own (a fresh copy the caller owns), or undefined when the key
 * is absent. `expectBytes` (the recorded size) picks the read path; the copy is of what is stored.
 */
function readValue(db: Bytes, key: Buffer, expectBytes: number): Uint8Array | undefined {
  if (expectBytes > SHARED_READ_MAX) {
    const buf = db.getBinary(key);
    return buf === undefined ? undefined : new Uint8Array(buf.buffer, buf.byteOffset, buf.byteLength);
  }
  const fast = db.getBinaryFast(key);
  if (fast === undefined) return undefined;
  // The shared read buffer's `length` is the value's; its byteLength may be the whole buffer's.
  const n = fast.length;
  const out = new Uint8Array(new SharedArrayBuffer(n));
  copyBytes(out, new Uint8Array(fast.buffer, fast.byteOffset, n));
  return out;
}

function chunkKey(key: string): Buffer {
  return Buffer.from(key, 'hex');
}

// ------------------------------------------------------------------------------------------------
// ids and keys

/** The UTF-8 key of a valid id (the store's one id check); throws E_OPTIONS naming what is wrong. */
function idKey(id: unknown): Buffer {
  return Buffer.from(validateId(id), 'utf8');
}

/** The key of an id, or undefined for an id that could never have been stored. */
function tryIdKey(id: unknown): Buffer | undefined {
  try {
    return idKey(id);
  } catch {
    return undefined;
  }
}

/** The id of a stored key, or undefined for a key that is not well-formed UTF-8. */
function keyId(key: Uint8Array): string | undefined {
  try {
    return utf8.decode(key);
  } catch {
    return undefined;
  }
}

/**
 * Overflow pages LMDB gives a value of `n` bytes under a `keyBytes` key: values whose node does
 * not fit half a page get their own run of pages (with a 16-byte header); smaller ones share leaf
 * pages (counted as one page, to stay conservative).
 */
function blobPages(n: number, keyBytes: number, pageSize: number): number {
  const nodeMax = Math.floor((pageSize - 16) / 2) - 2;
  if (n + keyBytes + 8 <= nodeMax) return n > 0 ? 1 : 0;
  return Math.ceil((n + 16) / pageSize);
}
// ------------------------------------------------------------------------------------------------
// lmdb helpers

function statsOf(db: Bytes): DbStats {
  // lmdb types getStats() as `{}`; these are the fields read.js fills from mdb_stat / mdb_env_info.
  return db.getStats() as DbStats;
}

/**
 * The KvtcError for a failed write. lmdb rejects with a generic "Commit failed" whose
 * `commitError` promise carries the cause; that promise must get a handler (or Node reports an
 * unhandled rejection) and is usually settled already, so a short wait recovers the cause.
 */
async function writeFailure(code: KvtcErrorCode, what: string, err: unknown): Promise<KvtcError> {
  let cause: unknown = err;
  const commitError = isRecord(err) ? err['commitError'] : undefined;
  if (isThenable(commitError)) {
    const detail = await new Promise<unknown>((resolve) => {
      const timer = setTimeout(() => resolve(undefined), COMMIT_DETAIL_WAIT_MS);
      timer.unref();
      commitError.then(
        () => {
          clearTimeout(timer);
          resolve(undefined);
        },
        (e: unknown) => {
          clearTimeout(timer);
          resolve(e);
        },
      );
    });
    if (detail !== undefined) cause = detail;
  }
  const errno = isRecord(cause) ? cause['code'] : undefined;
  const suffix = errno !== undefined ? ` (code ${String(errno)})` : '';
  return new KvtcError(code, `${what} failed: ${errorText(cause)}${suffix}`, { cause: err });
}

function noop(): void {}

function isThenable(v: unknown): v is PromiseLike<unknown> {
  return (typeof v === 'object' || typeof v === 'function') && v !== null && typeof (v as { then?: unknown }).then === 'function';
}



