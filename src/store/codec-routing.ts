/**
 * Codec routing: where a session's encoding and decoding run and how its parts are cut and
 * keyed. Encodes go to the worker pool chunk by chunk (on the CUDA backend the hot copy is
 * downloaded first); restores decode a session's parts in parallel on the pool into one shared
 * output, or — a session of one part on the CUDA backend — on the GPU. The store decides what
 * moves; this class only runs the codec and counts the tokens it codes.
 */
import { type Backend } from '../backend.js';
import { copyBytesAsync } from '../binding.js';
import type { CodecProfile } from '../codec/profile.js';
import { decodeSource } from '../codec/codec.js';
import { type DeviceKvCache, type DeviceKvTarget, decodeToDevice, isDeviceKvCache, uploadToTarget } from '../cuda/device.js';
import { KvtcError, toKvtcError as toError } from '../errors.js';
import { type KvCache, type KvLayout, dtypeBytes, rowValues } from '../layout.js';
import type { CodecPool } from '../workers/pool.js';
import type { BlobFormat, WireCache } from '../workers/tasks.js';
import { type ChainPlan, type KeyContext, type Segment, contentSalt, planChain, tokenChunkKeys } from './chain.js';
import type { ChunkRef } from './disk-record.js';
import type { DiskTier } from './disk-tier.js';
import { GpuBlock } from './gpu-block.js';
import { HostBlock } from './host-block.js';
import { type HostEntry, type HostTier, hostEntry } from './host-tier.js';
import { type SessionMeta, cacheBytes, copyCache } from './session.js';
import type { BufferPool, Lease } from './buffer-pool.js';

/** A hot session: host arrays (CPU backend) or a device allocation (CUDA backend). */
export type HotCache = { cache: KvCache; gpu?: undefined } | { gpu: GpuBlock; cache?: undefined };

/** A decoded host or disk record (see decodeRecord). */
export interface Decoded {
  cache?: KvCache;
  positions: Int32Array;
  /** The hot copy to promote; undefined when not promoting (or no device memory was left). */
  hot?: HotCache | undefined;
  /**
   * When the hot copy is `cache` itself in a pooled buffer: its lease, held once for the hot
   * entry the caller makes of it.
   */
  lease?: Lease;
  /**
   * When `cache` is not the hot copy (not promoted, or promoted to device memory): the lease of
   * its pooled buffer, held once for whoever takes the result — released once it has been copied
   * out (the buffer goes back to the pool), or detached when the cache itself is handed out.
   */
  freshLease?: Lease;
}

/** One encoded part of a session to decode: where it goes and how to read it. */
export interface Part {
  start: number;
  tokens: number;
  /** A host-arena handle, or a loader of its bytes (called again for a retry). */
  source: number | (() => Uint8Array);
  /** The chunk's key (undefined: the tail). */
  key?: string;
  /**
   * A hot cache holding this part's rows too (another session with the same prefix), asked when
   * the restore starts: its rows [from, from + tokens) are copied instead of decoded, under a hold
   * on its pooled buffer (taken at once, released when the copy is done). undefined: decode (the
   * hot session may be gone by then).
   */
  copy?: () => { cache: KvCache; from: number; hold: () => () => void } | undefined;
}

/** Restores of one part of at least this many raw bytes decode on the pool's idle threads too (~3 ms of one core; 9.3 -> 6.9 ms for a 2 MB session on 2 idle threads). */
const PARALLEL_RESTORE_BYTES = 1 << 20;
/** The most threads one restore takes. */
const MAX_RESTORE_THREADS = 8;

export interface CodecRoutingOptions {
  profile: CodecProfile;
  backend: Backend;
  format: BlobFormat;
  pool: CodecPool;
  host: HostTier;
  disk: DiskTier;
  /** Tokens per chunk; 0: one blob per session. */
  chunkTokens: number;
  /** Where restore outputs are allocated (recycled store-owned buffers). */
  buffers: BufferPool;
}

export class CodecRouting {
  readonly #profile: CodecProfile;
  readonly #backend: Backend;
  readonly #format: BlobFormat;
  readonly #pool: CodecPool;
  readonly #host: HostTier;
  readonly #disk: DiskTier;
  readonly #chunkTokens: number;
  readonly #buffers: BufferPool;
  /**
   * Tokens run through the codec, cumulative (what proves that clean demotions encode nothing),
   * and tokens of restores copied from a hot session's identical prefix instead of decoded.
   */
  readonly #codecTokens = { encodedTokens: 0, decodedTokens: 0, copiedTokens: 0 };
  /** Thread ids the pool reported for decodes (tests check the main thread never decodes). */
  readonly decodeThreads = new Set<number>();
  /** Threads each recent pool restore ran on (tests). */
  readonly restoreThreads: number[] = [];

  constructor(o: CodecRoutingOptions) {
    this.#profile = o.profile;
    this.#backend = o.backend;
    this.#format = o.format;
    this.#pool = o.pool;
    this.#host = o.host;
    this.#disk = o.disk;
    this.#chunkTokens = o.chunkTokens;
    this.#buffers = o.buffers;
  }

  /** Tokens encoded, decoded and copied from hot prefixes so far. */
  get tokens(): { encodedTokens: number; decodedTokens: number; copiedTokens: number } {
    return { ...this.#codecTokens };
  }

  /**
   * The hot tier's own copy of a cache: the (already private) host cache itself on the CPU
   * backend, a device allocation on the CUDA backend. undefined when device memory is exhausted:
   * the session then stays in (or goes to) a lower tier.
   */
  async hotCopy(src: KvCache | DeviceKvCache): Promise<HotCache | undefined> {
    if (this.#backend === 'cpu') return { cache: src as KvCache };
    try {
      return { gpu: isDeviceKvCache(src) ? await GpuBlock.fromDevice(src) : await GpuBlock.fromHost(src) };
    } catch (err) {
      if (toError(err).code === 'E_CAPACITY') return undefined;
      throw err;
    }
  }

  #wire(cache: KvCache): WireCache {
    const w: WireCache = { layout: cache.layout, tokens: cache.tokens, keys: cache.keys, values: cache.values };
    if (cache.positions) w.positions = cache.positions;
    return w;
  }

  /** The cut of a session below the hot tier. */
  #plan(meta: SessionMeta): ChainPlan {
    const s = this.#profile.settings;
    return planChain(meta.tokens, this.#chunkTokens, s.sinkTokens, s.windowTokens);
  }

  #keyContext(meta: SessionMeta): KeyContext {
    return { fingerprint: this.#profile.fingerprint, namespace: meta.namespace ?? '', dtype: meta.layout.dtype, format: this.#format };
  }

  /** The keys of a session's full chunks when it was put with token ids (undefined otherwise), as encodeToHost keys them. */
  tokenChunkKeysOf(meta: SessionMeta, positions: Int32Array): string[] | undefined {
    return meta.tokenIds ? tokenChunkKeys(this.#keyContext(meta), meta.tokenIds, positions, this.#plan(meta).chunks, this.#chunkTokens) : undefined;
  }

  /**
   * Encodes a hot session into a host entry (not installed) on the background workers: chunks
   * the host tier holds are referenced, chunks only the disk holds are read back, and only the
   * others — and the tail — are encoded. `carry` names the chunks a content-keyed session may
   * reuse. On failure everything taken is released and the session is untouched.
   */
  async encodeToHost(meta: SessionMeta, cache: KvCache, carry?: { host: readonly string[]; disk: readonly string[] }): Promise<HostEntry> {
    const plan = this.#plan(meta);
    const wire = this.#wire(cache);
    const ctx = this.#keyContext(meta);
    const taken: string[] = [];
    const take = (key: string): boolean => this.#host.refOrLoad(key, () => this.#disk.getChunk(key)) && taken.push(key) > 0;
    const keys = this.tokenChunkKeysOf(meta, cache.positions!);
    const known = carry ? [...carry.host, ...carry.disk] : [];
    const salt = keys ? '' : contentSalt(ctx, meta.id);
    let tail: HostBlock | undefined;
    try {
      const refs: ChunkRef[] = new Array<ChunkRef>(plan.chunks.length);
      // What must be encoded — the chunks no tier holds, and the tail — in a few tasks, one per
      // background worker (a task per chunk would cost a round trip between the threads each).
      /** A segment to encode: chunk `chunk` of the plan (keyed by `key`, or by content when none), or the tail. */
      type Job = { chunk?: number; key?: string; seg: Segment; tokens: number };
      const jobs: Job[] = [];
      plan.chunks.forEach((seg, chunk) => {
        const key = keys?.[chunk];
        if (key !== undefined && take(key)) refs[chunk] = { key, bytes: this.#host.chunks.block(key)!.bytes, tokens: seg.tokens };
        else jobs.push({ chunk, ...(key !== undefined ? { key } : {}), seg, tokens: seg.tokens });
      });
      jobs.push({ seg: plan.tail, tokens: plan.tail.tokens });
      const batches = batchesOf(jobs, this.#pool.maxThreads);
      const contentKeyed = (j: Job) => j.chunk !== undefined && j.key === undefined;
      const settled = await Promise.allSettled(
        batches.map((b) => this.#pool.encode(wire, this.#format, b.map((j) => ({ segment: j.seg, ...(contentKeyed(j) ? { contentKey: { salt, known } } : {}) })))),
      );
      // Every blob made is owned here before any failure is thrown (the catch below frees them).
      let failure: unknown;
      settled.forEach((res, b) => {
        if (res.status === 'rejected') {
          failure ??= res.reason;
          return;
        }
        res.value.forEach((r, i) => {
          const t = batches[b]![i]!;
          if (t.chunk === undefined) {
            this.#codecTokens.encodedTokens += t.tokens;
            tail = HostBlock.adopt(r);
            return;
          }
          const k = t.key ?? r.key!;
          if (r.skipped) {
            if (!take(k)) failure ??= new KvtcError('E_INTERNAL', `chunk ${k} of '${meta.id}' was known but is not held`);
          } else {
            this.#codecTokens.encodedTokens += t.tokens;
            this.#host.chunks.add(k, HostBlock.adopt(r)); // one stored meanwhile is referenced instead
            taken.push(k);
          }
          const held = this.#host.chunks.block(k);
          if (held) refs[t.chunk] = { key: k, bytes: held.bytes, tokens: t.tokens };
        });
      });
      if (failure !== undefined) throw failure;
      return hostEntry(meta, refs, tail!, false);
    } catch (err) {
      this.#host.chunks.release(taken);
      tail?.free();
      throw err;
    }
  }

  /**
   * The host copy of a hot session's data for the codec: the hot cache itself (CPU backend), or
   * its device copy downloaded (CUDA backend: chunks are encoded on the CPU pool).
   */
  async hostCacheOf(e: HotCache): Promise<KvCache> {
    return e.cache ?? copyCache(await e.gpu!.toHost(), true);
  }

  /** Runs a GPU codec step, or the CPU path when device memory is exhausted (nothing is lost). */
  async gpuOr<T>(gpu: () => Promise<T>, cpu: () => Promise<T>): Promise<T> {
    try {
      return await gpu();
    } catch (err) {
      if (toError(err).code !== 'E_CAPACITY') throw err;
      return cpu();
    }
  }

  /**
   * The parts of a session to decode: its chunks (read by `chunk`; undefined = missing, E_CORRUPT)
   * followed by its tail, in token order.
   */
  partsOf(chunks: readonly ChunkRef[], chunk: (c: ChunkRef) => Part['source'] | undefined, tail: Part['source']): Part[] {
    const parts: Part[] = [];
    let start = 0;
    for (const c of chunks) {
      const source = chunk(c);
      if (source === undefined) throw new KvtcError('E_CORRUPT', `chunk ${c.key} (tokens ${start}..${start + c.tokens}) is missing`);
      parts.push({ start, tokens: c.tokens, source, key: c.key });
      start += c.tokens;
    }
    parts.push({ start, tokens: -1, source: tail }); // the tail holds the rest
    return parts;
  }

  /**
   * Decodes a session's parts (host-arena handles, or disk blobs: a loader reads one, again for a
   * pool retry) into a host cache, or into the caller's device buffers (into), plus the hot copy
   * when promoting. The parts decode in parallel on the worker pool, each into its place in one
   * shared output. A session of one part (short, or written by the first version) decodes on the
   * GPU on the CUDA backend.
   */
  async decodeRecord(parts: Part[], format: BlobFormat, meta: SessionMeta, into: DeviceKvTarget | undefined, promote: boolean): Promise<Decoded> {
    this.#codecTokens.decodedTokens += meta.tokens;
    // The caller's buffers are checked before anything is decoded into them.
    if (into && meta.tokens > into.capacityTokens) {
      throw new KvtcError('E_CAPACITY', `session holds ${meta.tokens} tokens; the target has room for ${into.capacityTokens}`);
    }
    if (into && meta.layout.dtype !== into.layout.dtype) {
      throw new KvtcError('E_LAYOUT', `session holds ${meta.layout.dtype} values; the target is ${into.layout.dtype}`);
    }
    const tail = parts.at(-1)!;
    if (tail.start > meta.tokens) throw new KvtcError('E_CORRUPT', `chunks hold ${tail.start} tokens, the session ${meta.tokens}`);
    tail.tokens = meta.tokens - tail.start;
    const viaPool = async (): Promise<Decoded> => {
      const { cache, lease } = await this.#decodeParts(parts, format, meta);
      let hot: HotCache | undefined;
      try {
        if (into) await uploadToTarget(cache, into);
        if (promote) hot = await this.hotCopy(cache);
      } catch (err) {
        lease.release();
        throw err;
      }
      if (hot?.cache === cache) return { cache, positions: cache.positions!, hot, lease };
      // Staged for the caller's device buffers only: back to the pool.
      if (into) {
        lease.release();
        return { cache, positions: cache.positions!, ...(hot ? { hot } : {}) };
      }
      return { cache, positions: cache.positions!, ...(hot ? { hot } : {}), freshLease: lease };
    };
    if (this.#backend === 'cpu' || format === 'raw' || parts.length > 1) return viaPool();
    const source = typeof tail.source === 'number' ? tail.source : tail.source();
    return this.gpuOr<Decoded>(async () => {
      if (into) {
        const r = await decodeToDevice(source, this.#profile, into);
        if (r.tokens !== meta.tokens) throw new KvtcError('E_CORRUPT', `record holds ${r.tokens} tokens, its metadata says ${meta.tokens}`);
        const L = meta.layout.layers;
        const view: DeviceKvCache = { layout: meta.layout, tokens: r.tokens, keys: into.keys.slice(0, L), values: into.values.slice(0, L), positions: r.positions };
        return { positions: r.positions, ...(promote ? { hot: await this.hotCopy(view) } : {}) };
      }
      if (promote) {
        const gpu = await this.gpuOr(
          () => GpuBlock.decode(source, this.#profile, meta.layout, meta.tokens),
          async () => undefined, // no device memory to promote into: decode for the caller only
        );
        if (gpu) {
          try {
            const cache = await gpu.toHost();
            return { cache, positions: cache.positions!, hot: { gpu } };
          } catch (err) {
            await gpu.free();
            throw err;
          }
        }
      }
      const cache = await decodeSource(source, this.#profile, { gpu: true });
      return { cache, positions: cache.positions! };
    }, viaPool);
  }

  /**
   * Decodes parts on the pool into one shared cache (laid out as copyCache does: the hot tier can
   * keep it as it is), in a pooled buffer held once for the caller (released if the decode fails:
   * no worker writes it any more then). A session of one large part borrows the pool's idle
   * threads for it.
   */
  async #decodeParts(parts: readonly Part[], format: BlobFormat, meta: SessionMeta): Promise<{ cache: KvCache; lease: Lease }> {
    const layout: KvLayout = { ...this.#profile.layout, dtype: meta.layout.dtype };
    const T = meta.tokens;
    const perLayer = T * rowValues(layout) * dtypeBytes(layout.dtype);
    const perStream = layout.layers * perLayer;
    const lease = this.#buffers.acquire(cacheBytes(layout, T));
    try {
      return { cache: await this.#decodeInto(lease.buffer, parts, format, layout, T, perLayer, perStream), lease };
    } catch (err) {
      lease.release();
      throw err;
    }
  }

  async #decodeInto(buf: SharedArrayBuffer, parts: readonly Part[], format: BlobFormat, layout: KvLayout, T: number, perLayer: number, perStream: number): Promise<KvCache> {
    const meta = { rawBytes: 2 * perStream };
    const out = { keys: new Uint8Array(buf, 0, perStream), values: new Uint8Array(buf, perStream, perStream), positions: new Int32Array(buf, 2 * perStream, T), tokens: T, dtype: layout.dtype };
    const threads = parts.length === 1 && format === 'kvtc' && meta.rawBytes >= PARALLEL_RESTORE_BYTES ? Math.max(1, Math.min(MAX_RESTORE_THREADS, this.#pool.idleThreads())) : 1;
    // Parts a hot session holds too are copied, the rest decoded. The hot caches are looked up
    // and held in this synchronous stretch: a hold keeps a hot entry's buffer from going back to
    // the pool (and being written again) while the addon's threads copy from it, whatever happens
    // to the entry meanwhile.
    const copies = parts.map((p) => p.copy?.());
    const batches = batchesOf(
      parts.filter((_, i) => !copies[i]),
      this.#pool.maxThreads,
    );
    // Every task settles before a failure is thrown: the buffer goes back to the pool then, and no
    // worker may still be writing into it.
    const tasks = batches.map((b) => this.#pool.decodeParts(b.map((p) => ({ source: p.source, offset: p.start, expectTokens: p.tokens })), format, out, threads));
    const pairs: [ArrayBufferView, ArrayBufferView][] = [];
    const releases: (() => void)[] = [];
    copies.forEach((c, i) => {
      if (!c) return;
      const p = parts[i]!;
      releases.push(c.hold());
      pairs.push(...rowsOf(c.cache, c.from, p.tokens, out, p.start, perLayer));
      this.#codecTokens.decodedTokens -= p.tokens;
      this.#codecTokens.copiedTokens += p.tokens;
    });
    const copied = pairs.length > 0 ? copyBytesAsync(pairs).finally(() => releases.forEach((r) => r())) : Promise.resolve();
    const [settled, copyFailure] = await Promise.all([Promise.allSettled(tasks), copied.then(() => null, (err: unknown) => ({ err }))]);
    const failed = settled.find((r) => r.status === 'rejected');
    if (failed) throw failed.reason;
    if (copyFailure) throw copyFailure.err;
    const results = settled.map((r) => (r as PromiseFulfilledResult<Awaited<ReturnType<CodecPool['decodeParts']>>>).value);
    const used = new Set<number>();
    for (const r of results) {
      this.decodeThreads.add(r.threadId);
      used.add(r.threadId);
    }
    this.restoreThreads.push(parts.length === 1 ? results[0]!.threads : used.size);
    if (this.restoreThreads.length > 1000) this.restoreThreads.shift();
    const n = perLayer / dtypeBytes(layout.dtype);
    const view = (off: number) => (layout.dtype === 'f32' ? new Float32Array(buf, off, n) : new Uint16Array(buf, off, n));
    return {
      layout,
      tokens: T,
      positions: out.positions,
      keys: Array.from({ length: layout.layers }, (_, l) => view(l * perLayer)),
      values: Array.from({ length: layout.layers }, (_, l) => view(perStream + l * perLayer)),
    };
  }
}

/**
 * The (destination, source) byte ranges that copy rows [from, from + n) of a hot cache (with
 * positions) into a restore's output (layer-major keys and values, then positions) at row `at`.
 */
function rowsOf(src: KvCache, from: number, n: number, out: { keys: Uint8Array; values: Uint8Array; positions: Int32Array }, at: number, perLayer: number): [ArrayBufferView, ArrayBufferView][] {
  const rb = rowValues(src.layout) * dtypeBytes(src.layout.dtype);
  const rows = (a: ArrayBufferView) => new Uint8Array(a.buffer, a.byteOffset + from * rb, n * rb);
  const pairs: [ArrayBufferView, ArrayBufferView][] = [];
  for (let l = 0; l < src.layout.layers; l++) {
    pairs.push([out.keys.subarray(l * perLayer + at * rb, l * perLayer + (at + n) * rb), rows(src.keys[l]!)]);
    pairs.push([out.values.subarray(l * perLayer + at * rb, l * perLayer + (at + n) * rb), rows(src.values[l]!)]);
  }
  pairs.push([out.positions.subarray(at, at + n), src.positions!.subarray(from, from + n)]);
  return pairs;
}

/**
 * A session's parts in at most `n` runs of neighbouring parts with about equal tokens each: one
 * task per restore worker, so a restore of many chunks costs a few round trips between the
 * threads instead of one per chunk.
 */
export function batchesOf<P extends { tokens: number }>(parts: readonly P[], n: number): P[][] {
  const total = parts.reduce((s, p) => s + p.tokens, 0);
  const runs = Math.max(1, Math.min(n, parts.length));
  const out: P[][] = [];
  let run: P[] = [];
  let acc = 0;
  for (let i = 0; i < parts.length; i++) {
    run.push(parts[i]!);
    acc += parts[i]!.tokens;
    // Close the run at its share of the tokens, keeping one part at least for each run left.
    const left = parts.length - i - 1;
    if (out.length < runs - 1 && (acc >= ((out.length + 1) * total) / runs || left === runs - 1 - out.length)) {
      out.push(run);
      run = [];
    }
  }
  if (run.length > 0) out.push(run);
  return out;
}
