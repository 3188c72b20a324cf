/**
 * KvStore: the tiered KV-cache store a serving process embeds.
 *
 *   device (hot)  raw caches, ready for attention      demote: encode -> host
 *   host (warm)   encoded blobs in the native arena     spill: -> disk
 *   disk (cold)   encoded blobs + metadata in LMDB      evict by capacity / expire by TTL
 *
 * Concurrency model: operations on one session id run in call order on that id's chain;
 * different ids proceed in parallel. Capacity is restored after each operation by a single
 * rebalancing loop that runs outside the id chains (so chains never wait on each other).
 * All encoding and decoding runs off the main thread (codec-routing.ts): on the worker pool, or
 * on the GPU through the addon's thread pool (CUDA backend, where the hot tier is device memory).
 *
 * Below the hot tier a session is a chain of encoded chunks plus its own tail (chain.ts): chunks
 * are shared between sessions with equal prefixes and counted once (host-tier.ts, disk-tier.ts),
 * so a demotion encodes only what no tier holds, and a clean one nothing.
 */
import { mkdirSync, realpathSync } from 'node:fs';
import { LRUCache } from 'lru-cache';
import { type Backend, resolveBackend } from '../backend.js';
import { CodecProfile } from '../codec/profile.js';
import { cacheRows, checkProfileFits, copyRows } from '../codec/codec.js';
import {
  type DeviceKvCache,
  type DeviceKvTarget,
  downloadDeviceCache,
  findNonFiniteDevice,
  isDeviceKvCache,
  validateDeviceCache,
  validateDeviceTarget,
} from '../cuda/device.js';
import { KvtcError, checkKeys, invalidParameter, toKvtcError as toError } from '../errors.js';
import { crc32c } from '../binding.js';
import { type KvCache, rowValues, validateCache } from '../layout.js';
import { type ResolvedStoreOptions, type StoreOptions, resolveStoreOptions } from '../options.js';
import { CodecPool } from '../workers/pool.js';
import type { BlobFormat } from '../workers/tasks.js';
import {
  type DeviceSessionEntry,
  type GetOptions,
  type PrefixOptions,
  type PutOptions,
  type SessionEntry,
  type StoreQuarantine,
  checkGetOptions,
  checkPrefixArgs,
  resolvePutOptions,
} from './call-options.js';
import { lockDirectory } from './dir-lock.js';
import { type ChunkRef, DiskTier, type DiskRecordMeta } from './disk-tier.js';
import { type HostEntry, HostTier, hostEntry } from './host-tier.js';
import { RemoteTier } from './remote-tier.js';
import { decodeRemoteManifest, encodeRemoteManifest } from './remote-manifest.js';
import { type MissReason, type StoreEvent, type StoreEventName, StoreEvents } from './events.js';
import { Lanes } from './lanes.js';
import { PrefixIndex } from './prefix-index.js';
import { type PolicyEntry, policyEntry } from './policy.js';
import { HostBlock, arenaStats } from './host-block.js';
import { CodecRouting, type Decoded, type HotCache, type Part } from './codec-routing.js';
import { type SessionMeta, type Tier, copyCache, copyCacheAsync, copyCacheLeased, overheadOf, rawBytesOf, validateId } from './session.js';
import { BufferPool, type Lease, idleBufferBudget } from './buffer-pool.js';
import { StoreCounters, type StoreStats } from './stats.js';
import { TierIndex } from './tier-index.js';

export type { MissReason, StoreEvent, StoreEventName } from './events.js';
export type { DeviceSessionEntry, GetOptions, GetStatus, PrefixOptions, PutOptions, SessionEntry, StoreQuarantine } from './call-options.js';

interface Restored {
  /** Host result (get); absent when the session went into a caller's device buffers. */
  cache?: KvCache;
  /** The cache is referenced by nothing in the store: its first caller may take it as it is. */
  fresh: boolean;
  meta: SessionMeta;
  tier: Tier;
  positions?: Int32Array;
  /** The lease on `cache`'s buffer when it is a hot entry's: a caller holds it while copying. */
  lease?: Lease;
  /**
   * The lease on `cache`'s buffer when nothing in the store keeps it (a fresh restore), held once
   * for this restore's callers: the first caller releases it (recycled once every caller's copy
   * is done) or detaches it (it took the cache itself). Dropped by any other taker, the buffer
   * is simply not recycled.
   */
  freshLease?: Lease;
}

type DeviceEntry = HotCache & {
  meta: SessionMeta;
  /** Everything the entry holds: the raw cache plus its overhead. */
  bytes: number;
  overhead: number;
  onDisk: boolean; // an identical copy is persisted
  /** The pooled buffer of `cache` (CPU backend), released when the entry is dropped. */
  lease?: Lease;
  /**
   * Chunks of the session's previous version, held (host references, disk pins) until this one
   * is demoted: a grown session encodes only its new chunks. Released by whoever drops the entry.
   */
  carry?: Carry;
  /** The keys of its full chunks (a session put with token ids), computed when a restore first asks (see #copyFromHot). */
  chunkKeys?: string[];
};

interface Carry {
  host: string[];
  disk: string[];
}

/** @internal What src/internal/testing.ts reaches into (fault injection, decode threads). */
export const storeTestHooks = new WeakMap<KvStore, { pool: CodecPool; decodeThreads: Set<number>; restoreThreads: number[]; buffers: BufferPool }>();

/** Sessions sharing a prefix asked per chunk of a restore for a hot copy of it (bounds the walk when thousands share one prompt). */
const COPY_CANDIDATES = 32;

/** Store directories open in this process (real paths). */
const OPEN_PATHS = new Set<string>();

export class KvStore {
  readonly options: ResolvedStoreOptions;
  readonly profile: CodecProfile;
  /** Where the hot tier and the codec run: 'cuda' (device memory, GPU codec) or 'cpu'. */
  readonly backend: Backend;
  readonly #format: BlobFormat;
  readonly #disk: DiskTier;
  readonly #pool: CodecPool;
  readonly #events = new StoreEvents();
  readonly #device = new TierIndex<DeviceEntry>();
  readonly #host = new HostTier();
  /** The shared tier (options.remote), and the sessions whose current version it holds (sent or read by this store). */
  readonly #remote: RemoteTier | undefined;
  readonly #onRemote = new Map<string, SessionMeta>();
  /** Background remote writes in flight (write-back): settled() and close() wait for them. */
  readonly #remoteWrites = new Set<Promise<void>>();
  readonly #counters = new StoreCounters();
  /** Where encodes and decodes run (and the tokens they coded). */
  readonly #codec: CodecRouting;
  readonly #lanes = new Lanes();
  /** The hot tier's copies of caches, recycled (buffer-pool.ts): idle ones up to half the hot tier, 1 GiB at most. */
  readonly #buffers: BufferPool;
  /** Ids the store itself removed (capacity, TTL), most recent 10k: a later get says why it missed. */
  readonly #gone = new LRUCache<string, MissReason>({ max: 10_000 });
  readonly #prefixes: PrefixIndex;
  #rebalancing: Promise<void> | undefined;
  #rebalanceAgain = false;
  #timer: NodeJS.Timeout | undefined;
  #closed = false;
  #closing: Promise<void> | undefined;
  #pathKey = '';
  #unlock: () => void = () => undefined;

  private constructor(options: ResolvedStoreOptions, profile: CodecProfile, disk: DiskTier, pool: CodecPool, backend: Backend, remote: RemoteTier | undefined) {
    this.options = options;
    this.#remote = remote;
    // The remote's faults and damaged values are the store's events (it keeps serving locally).
    remote?.on('error', (error) => this.#emit('error', { id: '', from: 'remote', reason: 'remote tier fault', error }));
    remote?.on('corrupt', (e) => this.#emit('corrupt', { id: e.id, from: 'remote', reason: e.detail }));
    this.profile = profile;
    this.backend = backend;
    this.#format = options.compression === 'none' ? 'raw' : 'kvtc';
    this.#disk = disk;
    this.#pool = pool;
    this.#buffers = new BufferPool({ maxIdleBytes: idleBufferBudget(options.device.capacityBytes) });
    this.#codec = new CodecRouting({
      profile,
      backend,
      format: this.#format,
      pool,
      host: this.#host,
      disk,
      chunkTokens: options.blobPerSession ? 0 : options.chunkTokens,
      buffers: this.#buffers,
    });
    this.#timer = setInterval(() => this.#sweep(), options.sweepIntervalMs);
    this.#timer.unref();
    this.#prefixes = new PrefixIndex(profile.fingerprint, options.chunkTokens);
    // Sessions that reached disk before are found by prefix again after a restart.
    for (const m of disk.prefixSessions(profile.fingerprint)) this.#prefixes.add(m);
    storeTestHooks.set(this, { pool, decodeThreads: this.#codec.decodeThreads, restoreThreads: this.#codec.restoreThreads, buffers: this.#buffers });
  }

  /** Opens (or creates) a store. Reopening a path finds every session that reached its disk tier. */
  static async open(options: StoreOptions): Promise<KvStore> {
    const resolved = resolveStoreOptions(options);
    if (options.profile === undefined) throw new KvtcError('E_OPTIONS', 'options.profile is required (a CodecProfile or a path)');
    const profile =
      options.profile instanceof CodecProfile
        ? options.profile
        : typeof options.profile === 'string'
          ? await CodecProfile.load(options.profile)
          : (() => {
              throw new KvtcError('E_OPTIONS', `options.profile must be a CodecProfile or a path, got ${String(options.profile)}`);
            })();
    const backend = resolveBackend(resolved.backend);
    try {
      mkdirSync(resolved.path, { recursive: true });
    } catch (err) {
      throw new KvtcError('E_IO', `cannot create store directory ${resolved.path}: ${(err as Error).message}`, { cause: err });
    }
    // One writer per directory: the disk tier's accounting assumes it is the only one.
    const key = realpathSync(resolved.path);
    if (OPEN_PATHS.has(key)) throw new KvtcError('E_OPTIONS', `a KvStore is already open on ${resolved.path} in this process`);
    // ... and across processes (E_LOCKED while another live process holds it).
    const unlock = lockDirectory(resolved.path);
    let disk: DiskTier;
    try {
      disk = DiskTier.open({
        path: resolved.path,
        capacityBytes: resolved.disk.capacityBytes,
        mapSizeBytes: resolved.disk.mapSizeBytes,
        quarantineBytes: resolved.disk.quarantineBytes,
      });
    } catch (err) {
      unlock();
      throw err;
    }
    // A wrong profile must not touch the sessions another one wrote (they would all be misses).
    const foreign = disk.foreignFingerprints(profile.fingerprint);
    if (foreign.size > 0 && resolved.foreignRecords === 'refuse') {
      await disk.close();
      unlock();
      const found = [...foreign].map(([fp, n]) => `${n} with profile ${fp}`).join(', ');
      throw new KvtcError(
        'E_PROFILE_MISMATCH',
        `store directory ${resolved.path} holds sessions encoded with another profile (${found}); this store's profile is ${profile.fingerprint}. Open it with the profile that wrote them, or pass foreignRecords: 'miss' to leave them on disk as misses`,
      );
    }
    let pool: CodecPool;
    try {
      pool = new CodecPool(profile, resolved.workers);
    } catch (err) {
      await disk.close();
      unlock();
      throw err;
    }
    // The shared tier: E_IO when it cannot be reached at open (unless remote.waitForReady is false).
    let remote: RemoteTier | undefined;
    if (resolved.remote) {
      try {
        remote = await RemoteTier.connect(resolved.remote, profile.fingerprint);
      } catch (err) {
        await pool.destroy();
        await disk.close();
        unlock();
        throw err;
      }
    }
    OPEN_PATHS.add(key);
    const store = new KvStore(resolved, profile, disk, pool, backend, remote);
    store.#pathKey = key;
    store.#unlock = unlock;
    return store;
  }

  // ------------------------------------------------------------------------------ events

  /** Listens to an event. A listener that throws is reported as a process warning; it never affects a call. */
  on(event: StoreEventName, fn: (e: StoreEvent) => void): this {
    this.#events.on(event, fn);
    return this;
  }

  off(event: StoreEventName, fn: (e: StoreEvent) => void): this {
    this.#events.off(event, fn);
    return this;
  }

  once(event: StoreEventName, fn: (e: StoreEvent) => void): this {
    this.#events.once(event, fn);
    return this;
  }

  #emit(event: StoreEventName, e: StoreEvent): void {
    this.#events.emit(event, e); // never throws: listeners run isolated (events.ts)
  }

  /** Records that failed a check, moved out of the live set; bounded by tiers.disk.quarantineBytes. */
  readonly quarantine: StoreQuarantine = {
    list: () => {
      this.#checkOpen();
      return this.#disk.quarantined();
    },
    clear: async () => {
      this.#checkOpen();
      return this.#disk.clearQuarantine();
    },
  };

  // ------------------------------------------------------------------------------ public API

  /**
   * Stores a cache in the hot tier (replacing any previous version of the session). On the CUDA
   * backend the cache may be a DeviceKvCache (device addresses of an engine in this process): it
   * is copied device to device. The store always keeps its own copy, made off the event loop:
   * the cache's arrays must not be modified until the put resolves.
   */
  async put(id: string, cache: KvCache | DeviceKvCache, options: PutOptions = {}): Promise<void> {
    this.#checkOpen();
    validateId(id);
    const onDevice = isDeviceKvCache(cache);
    if (onDevice) {
      validateDeviceCache(cache);
      if (this.backend !== 'cuda') throw new KvtcError('E_BACKEND', `a DeviceKvCache needs the cuda backend; this store runs on the ${this.backend}`);
    } else {
      validateCache(cache);
    }
    checkProfileFits(cache.layout, this.profile);
    const opts = resolvePutOptions(options, this.options.disk.ttlMs);
    const rawBytes = rawBytesOf(cache.layout, cache.tokens);
    const now = Date.now();
    const meta: SessionMeta = {
      id,
      layout: { ...this.profile.layout, dtype: cache.layout.dtype },
      tokens: cache.tokens,
      rawBytes,
      pinned: opts.pin,
      priority: opts.priority,
      ttlMs: opts.ttlMs,
      createdAt: now,
      lastAccess: now,
    };
    if (opts.attachment) meta.attachment = new Uint8Array(opts.attachment);
    if (opts.tokens) {
      if (opts.tokens.length !== cache.tokens) {
        throw new KvtcError('E_LAYOUT', `options.tokens must hold one token id per cached position (${cache.tokens}), got ${opts.tokens.length}`);
      }
      meta.tokenIds = opts.tokens;
      meta.namespace = opts.namespace;
    }
    // The caller may reuse its arrays once put resolves. The store's copy is made on the addon's
    // thread pool, started now (call order is kept: the chain waits for it). Device caches are
    // copied on the chain.
    // A host cache is checked for NaN/Inf (nonFinite: 'reject') as it is copied: one pass over it.
    const copying = onDevice ? undefined : copyCacheLeased(cache, this.#buffers, this.options.nonFinite === 'reject');
    copying?.catch(() => undefined); // awaited on the chain; a failure rejects the put there
    this.#bump(id);
    await this.#serial(id, async () => {
      const copied = await copying;
      const owned = copied?.cache;
      // The copy's buffer: the hot entry's from here on, or released when this put ends without one.
      let lease = copied?.lease;
      try {
        // Scanned off the main thread (with the copy; a device cache on the GPU), reported in call
        // order with the session's other operations.
        if (this.options.nonFinite === 'reject') {
          const bad = copied ? copied.nonFinite : await findNonFiniteDevice(cache as DeviceKvCache);
          if (bad) {
            throw new KvtcError('E_LAYOUT', `cache.${bad.stream}[${bad.layer}] holds NaN or Inf at token ${bad.token} (options.nonFinite is 'reject')`);
          }
        }
        const hotBytes = rawBytes + overheadOf(meta, true);
        if (opts.pin && hotBytes + this.#pinnedBytes(id) > this.options.device.capacityBytes) {
          throw new KvtcError('E_CAPACITY', `pinned sessions would exceed tiers.device.capacityBytes (${this.options.device.capacityBytes})`);
        }
        const t0 = performance.now();
        // The new copy exists before the old version goes: a put that fails leaves the session as it was.
        // A session larger than the whole hot tier never enters it, whatever the policy says.
        const admitted = hotBytes <= this.options.device.capacityBytes &&
          this.options.policy.admit(policyEntry(meta, hotBytes), { capacityBytes: this.options.device.capacityBytes, bytes: this.#device.bytes });
        const hot = admitted ? await this.#codec.hotCopy(owned ?? (cache as DeviceKvCache)) : undefined;
        // The previous version's chunks stay held for this one: unchanged chunks are not encoded again.
        const carry = this.#carryOf(id);
        if (hot) {
          await this.#forgetOr(id, async () => {
            await this.#releaseCarry(carry);
            await hot.gpu?.free();
          });
          const own = hot.cache !== undefined && hot.cache === owned ? lease : undefined;
          this.#device.set(id, { meta, ...hot, bytes: hotBytes, overhead: hotBytes - rawBytes, onDisk: false, carry, ...(own ? { lease: own } : {}) });
          if (own) lease = undefined;
          this.#index(meta);
          this.#emit('put', { id, to: 'device', rawBytes, ms: performance.now() - t0 });
        } else {
          // Larger than the whole hot tier, or no device memory left: straight to the host tier.
          let entry: HostEntry;
          try {
            const src = owned ?? copyCache(await downloadDeviceCache(cache as DeviceKvCache), true);
            entry = await this.#codec.encodeToHost(meta, src, carry);
          } finally {
            await this.#releaseCarry(carry);
          }
          await this.#forgetOr(id, () => this.#host.free(entry));
          await this.#installHost(entry);
          await this.#toRemote(entry);
          this.#index(meta);
          this.#emit('put', { id, to: 'host', bytes: entry.blobBytes, rawBytes, ms: performance.now() - t0 });
        }
      } finally {
        lease?.release();
      }
    });
    await this.#rebalance();
  }

  /** Returns a session's cache from whichever tier holds it, or undefined (a miss). */
  async get(id: string, options: GetOptions = {}): Promise<KvCache | undefined> {
    return (await this.getEntry(id, options))?.cache;
  }

  /** Like get(), with the session's attachment and the tier it was found in. */
  async getEntry(id: string, options: GetOptions = {}): Promise<SessionEntry | undefined> {
    this.#checkOpen();
    validateId(id);
    const { promote, status, into } = checkGetOptions(options, this.profile);
    const t0 = performance.now();
    // Concurrent gets of one id share one restore.
    const { promise, joined, callers } = this.#lanes.shared(id, () => this.#restore(id, promote));
    const r = await promise;
    this.#rebalanceLater(); // a promotion may push others down: not this caller's wait
    if (typeof r === 'string') {
      if (status) Object.assign(status, { result: 'miss', reason: r });
      this.#emit('miss', { id, reason: r });
      return undefined;
    }
    // Every caller gets its own copy of a stored session: nobody can alter it through the result.
    // A restore the store keeps no reference to goes as it is to its caller when it has only one.
    // A hot entry's buffer is not recycled while this caller copies it (held before any other
    // operation on the id can run: those wait on the id's lane behind this restore's callers).
    // A fresh restore's buffer is held the same way by every caller copying it: the first caller
    // (whose continuation runs first, before any copy can finish) gives the restore's own hold
    // back after its copy, so the buffer is recycled when the last copy is done — or hands it
    // out when it takes the cache itself.
    const release = (r.lease ?? r.freshLease)?.hold();
    let cache: KvCache;
    try {
      if (into) {
        cache = cacheRows(into, r.cache!.tokens, r.cache!.layout.dtype);
        await copyRows(r.cache!, cache);
      } else {
        cache = !joined && r.fresh && callers() === 1 ? r.cache! : await copyCacheAsync(r.cache!, false);
      }
    } finally {
      release?.();
      if (!joined && r.freshLease) {
        if (cache! === r.cache) r.freshLease.detach();
        else r.freshLease.release();
      }
    }
    const entry: SessionEntry = { cache, tier: r.tier };
    if (r.meta.attachment) entry.attachment = new Uint8Array(r.meta.attachment);
    // The latency the caller saw (its wait on the session's queue and its copy included) is the one reported.
    const ms = performance.now() - t0;
    this.#counters.hit(r.tier, ms);
    if (status) Object.assign(status, { result: 'hit', tier: r.tier, ms });
    this.#emit('hit', { id, from: r.tier, ms });
    return entry;
  }

  /**
   * Restores a session straight into a caller's device buffers (CUDA backend): a device hit is a
   * device-to-device copy, a host or disk hit is decoded on the GPU into the target, with no
   * host round trip of the cache. Resolves when the target holds the cache; undefined on a miss.
   * A record found damaged while decoding is a miss (with a 'corrupt' event) and leaves the
   * target's contents unspecified.
   */
  async getInto(id: string, target: DeviceKvTarget, options: GetOptions = {}): Promise<DeviceSessionEntry | undefined> {
    this.#checkOpen();
    validateId(id);
    validateDeviceTarget(target);
    if (this.backend !== 'cuda') throw new KvtcError('E_BACKEND', `getInto needs the cuda backend; this store runs on the ${this.backend}`);
    checkProfileFits(target.layout, this.profile);
    const { promote, into } = checkGetOptions(options, this.profile);
    if (into) throw new KvtcError('E_OPTIONS', 'getInto takes its target as its second argument, not options.into');
    const t0 = performance.now();
    const r = await this.#serial(id, () => this.#restore(id, promote, target));
    this.#rebalanceLater();
    if (typeof r === 'string') {
      this.#emit('miss', { id, reason: r });
      return undefined;
    }
    const ms = performance.now() - t0;
    this.#counters.hit(r.tier, ms);
    this.#emit('hit', { id, from: r.tier, ms });
    const entry: DeviceSessionEntry = { tokens: r.meta.tokens, positions: r.positions!, tier: r.tier };
    if (r.meta.attachment) entry.attachment = new Uint8Array(r.meta.attachment);
    return entry;
  }

  /** Takes a session out of the hot tier now (to the host tier, or to disk). Returns where it is. */
  async evict(id: string, options: { to?: 'host' | 'disk' } = {}): Promise<Tier | undefined> {
    this.#checkOpen();
    validateId(id);
    if (typeof options !== 'object' || options === null) throw invalidParameter('evict options', 'an object', options);
    checkKeys(options, ['to'], 'evict options');
    const to = options.to ?? 'host';
    if (to !== 'host' && to !== 'disk') throw invalidParameter('options.to', "'host' or 'disk'", to);
    this.#bump(id);
    const where = await this.#serial(id, async () => {
      const from = this.has(id);
      if (from === 'device') await this.#demote(id, to);
      else if (from === 'host' && to === 'disk') await this.#spill(id);
      const now = this.has(id);
      if (from && from !== now) this.#emit('evict', { id, from, ...(now ? { to: now } : {}) });
      return now;
    });
    await this.#rebalance();
    return where;
  }

  /** Forgets a session everywhere. Returns whether it existed. */
  async delete(id: string): Promise<boolean> {
    this.#checkOpen();
    validateId(id);
    this.#bump(id);
    return this.#serial(id, async () => {
      const from = this.has(id);
      await this.#forget(id);
      this.#prefixes.remove(id);
      // On the remote too (another process may have put it): a fault there is an 'error' event.
      const remote = await this.#remote?.deleteSession(id).catch((err: unknown) => {
        this.#emit('error', { id, from: 'remote', reason: 'remote delete failed', error: toError(err) });
        return false;
      });
      const was = from ?? (remote ? 'remote' : undefined);
      if (was) this.#emit('delete', { id, from: was });
      return was !== undefined;
    });
  }

  /** The highest tier holding a session, or undefined. */
  has(id: string): Tier | undefined {
    validateId(id);
    return this.#tierOf(id);
  }

  #tierOf(id: string): Tier | undefined {
    if (this.#device.has(id)) return 'device';
    if (this.#host.has(id)) return 'host';
    if (this.#disk.has(id) && this.#ownRecord(id)) return 'disk';
    if (this.#onRemote.has(id)) return 'remote';
    return undefined;
  }

  /** A disk record this store can restore: its profile's, or unreadable (a get reports it corrupt). */
  #ownRecord(id: string): boolean {
    const fp = this.#disk.fingerprintOf(id);
    return fp === undefined || fp === this.profile.fingerprint;
  }

  stats(): StoreStats {
    this.#checkOpen();
    const dev = this.#device.totals(); // every total below is maintained on change: O(1) at any size
    const host = this.#host.totals();
    const { chunks: diskChunks, chunkRefs: diskRefs, chunkBytes: _diskChunkBytes, chunkBytesSaved: diskSaved, ...disk } = this.#disk.totals();
    const hc = this.#host.chunks.totals();
    const raw = host.rawBytes + disk.rawBytes;
    const stored = host.storedBytes - host.overheadBytes + disk.storedBytes - disk.overheadBytes;
    const a = arenaStats();
    return {
      device: { ...dev, hits: this.#counters.hits.device, ...this.#counters.latency('device') },
      host: { ...host, hits: this.#counters.hits.host, ...this.#counters.latency('host') },
      disk: { ...disk, hits: this.#counters.hits.disk, ...this.#counters.latency('disk'), quarantine: this.#disk.quarantineTotals() },
      ...(this.#remote
        ? { remote: { ...this.#remote.stats(), hits: this.#counters.hits.remote, ...this.#counters.latency('remote'), pendingWrites: this.#remoteWrites.size } }
        : {}),
      misses: this.#counters.misses,
      codec: this.#codec.tokens,
      chunks: { count: hc.chunks + diskChunks, refs: hc.refs + diskRefs, bytesSaved: hc.bytesSaved + diskSaved },
      meanRatio: stored > 0 ? raw / stored : undefined,
      arena: { bytes: a.bytes, blocks: a.blocks, pinned: a.pinned },
      workers: this.#pool.threads,
      backend: this.backend,
    };
  }

  /**
   * Waits for every pending operation, persists hot and warm sessions to disk (flushOnClose),
   * and releases workers, native memory and the LMDB environment. Later calls reject E_CLOSED.
   */
  close(): Promise<void> {
    this.#closing ??= this.#doClose();
    return this.#closing;
  }

  async #doClose(): Promise<void> {
    this.#closed = true;
    if (this.#timer) clearInterval(this.#timer);
    await this.#drain();
    let failure: unknown;
    // Every session is tried; the ones that could not be persisted are named in the error.
    const unpersisted: { id: string; error: KvtcError }[] = [];
    if (this.options.flushOnClose) {
      const flush = async (id: string, from: Tier, fn: () => Promise<void>) => {
        await this.#serial(id, fn).catch((err: unknown) => {
          const error = toError(err);
          unpersisted.push({ id, error });
          this.#emit('error', { id, from, reason: 'flush on close failed', error });
        });
      };
      for (const [id] of [...this.#device.lru()]) await flush(id, 'device', () => this.#demote(id, 'disk'));
      for (const [id] of [...this.#host.lru()]) await flush(id, 'host', () => this.#spill(id));
    }
    // The flush may have filled the disk tier past its capacity: evict (with events) as any put would.
    await this.#rebalanceOnce().catch((err: unknown) => {
      failure ??= err;
    });
    if (unpersisted.length > 0) {
      const first = unpersisted[0]!.error;
      const named = unpersisted.slice(0, 100).map((u) => `'${u.id}'`).join(', ');
      const more = unpersisted.length > 100 ? ` and ${unpersisted.length - 100} more` : '';
      failure = new KvtcError(
        first.code,
        `close() could not persist ${unpersisted.length} session(s), lost with the process: ${named}${more}; every other session was persisted (first error: ${first.message})`,
        { cause: first },
      );
    }

    // Every release runs even if one fails, so the path can be reopened.
    const release = async (fn: () => Promise<unknown>) => {
      try {
        await fn();
      } catch (err) {
        failure ??= err;
      }
    };
    for (const [id] of [...this.#device.lru()]) await release(() => this.#dropHot(id));
    this.#host.clear(); // after the hot entries released the chunks they carried
    this.#buffers.clear();
    await Promise.allSettled([...this.#remoteWrites]);
    if (this.#remote) await release(() => this.#remote!.close());
    await release(() => this.#pool.destroy());
    await release(() => this.#disk.close());
    this.#unlock();
    OPEN_PATHS.delete(this.#pathKey);
    if (failure) throw toError(failure);
  }

  // ------------------------------------------------------------------------------ internals

  #checkOpen(): void {
    if (this.#closed) throw new KvtcError('E_CLOSED', 'the store is closed');
  }

  /** Records why the store removed a session, for the miss a later get reports. */
  #left(id: string, reason: MissReason): void {
    this.#gone.set(id, reason);
    this.#unindexIfGone(id);
  }

  /**
   * Marks the chunks of a restore that a hot session holds as well to be copied from its raw
   * cache instead of decoded (a shared system prompt restored for one conversation while another
   * one using it is hot). "Holds as well" is the rule by which sessions share encoded chunks: the
   * same chunk key — the same token ids and positions up to the chunk's end, in the same
   * namespace, profile, dtype and format. Candidates come from the prefix index (sessions with
   * the same token ids), checked by key when the restore starts. CPU backend (a hot GPU copy
   * would have to be downloaded first).
   */
  #copyFromHot(meta: SessionMeta, parts: Part[]): Part[] {
    const prefixKeys = this.backend === 'cpu' && meta.tokenIds ? this.#prefixes.keysOf(meta.id) : undefined;
    if (!prefixKeys) return parts;
    const C = this.options.chunkTokens;
    parts.forEach((p, i) => {
      const prefixKey = prefixKeys[i];
      const key = p.key;
      if (key === undefined || prefixKey === undefined || p.start !== i * C || p.tokens !== C) return;
      p.copy = () => {
        let asked = 0;
        for (const other of this.#prefixes.sessionsWith(prefixKey)) {
          if (++asked > COPY_CANDIDATES) break;
          const e = other === meta.id ? undefined : this.#device.peek(other);
          const lease = e?.lease; // a pooled hot copy (every one on the CPU backend)
          if (!e?.cache?.positions || !lease) continue;
          e.chunkKeys ??= this.#codec.tokenChunkKeysOf(e.meta, e.cache.positions) ?? [];
          if (e.chunkKeys[i] === key) return { cache: e.cache, from: p.start, hold: () => lease.hold() };
        }
        return undefined;
      };
    });
    return parts;
  }

  /** Adds a session put with token ids to the prefix index. */
  #index(meta: SessionMeta): void {
    if (meta.tokenIds) this.#prefixes.add({ id: meta.id, namespace: meta.namespace ?? '', tokenIds: meta.tokenIds });
    else this.#prefixes.remove(meta.id);
  }

  #unindexIfGone(id: string): void {
    if (this.#tierOf(id) === undefined) this.#prefixes.remove(id);
  }

  // ------------------------------------------------------------------------------ prefixes

  /**
   * The longest prefix of `tokens`, in tokens, that the store can restore from any session of the
   * namespace (put with token ids): 0 when none holds at least one chunk (`chunkTokens`) of it.
   */
  async matchPrefix(tokens: ArrayLike<number>, options: PrefixOptions = {}): Promise<number> {
    this.#checkOpen();
    const { ids, namespace } = checkPrefixArgs(tokens, options);
    return this.#prefixes.longest(namespace, ids, (id) => this.#tierOf(id) !== undefined)[0]?.tokens ?? 0;
  }

  /**
   * The cache of the longest stored prefix of `tokens` (its `cache.tokens` is the matched length,
   * positions 0..n-1), restored from the session that holds it (promoted like a get, unless
   * `promote: false`; `from` names it, `attachment` is its attachment), or undefined when no
   * session of the namespace holds at least one chunk of it.
   */
  async getPrefix(tokens: ArrayLike<number>, options: PrefixOptions = {}): Promise<SessionEntry | undefined> {
    this.#checkOpen();
    const { ids, namespace } = checkPrefixArgs(tokens, options);
    if (options.promote !== undefined && typeof options.promote !== 'boolean') throw invalidParameter('options.promote', 'a boolean', options.promote);
    for (const m of this.#prefixes.longest(namespace, ids, (id) => this.#tierOf(id) !== undefined)) {
      const got = await this.getEntry(m.id, { promote: options.promote ?? true });
      // The session may have changed or gone since the lookup: take it only if it still matches.
      const meta = got && this.#metaOf(m.id);
      if (!got || !meta?.tokenIds || (meta.namespace ?? '') !== namespace || got.cache.tokens < m.tokens) continue;
      let same = true;
      for (let i = 0; i < m.tokens && same; i++) same = meta.tokenIds[i] === ids[i];
      if (!same) continue;
      const entry: SessionEntry = { cache: sliceCache(got.cache, m.tokens), tier: got.tier, from: m.id };
      if (got.attachment) entry.attachment = got.attachment;
      return entry;
    }
    return undefined;
  }

  /** The metadata of a session, from whichever tier holds it. */
  #metaOf(id: string): SessionMeta | DiskRecordMeta | undefined {
    return this.#device.peek(id)?.meta ?? this.#host.peek(id)?.meta ?? this.#disk.meta(id);
  }

  /** Runs fn after every earlier operation on the same id. */
  #serial<T>(id: string, fn: () => Promise<T>): Promise<T> {
    return this.#lanes.run(id, fn);
  }

  /** Waits until no id lane and no rebalancing is running. */
  async #drain(): Promise<void> {
    for (;;) {
      const pending = this.#lanes.pending();
      if (this.#rebalancing) pending.push(this.#rebalancing);
      pending.push(...this.#remoteWrites);
      if (pending.length === 0) return;
      await Promise.allSettled(pending);
    }
  }

  /** A new version of a session is coming: in-flight gets of the old one are not shared with it. */
  #bump(id: string): void {
    this.#lanes.bump(id);
    this.#gone.delete(id); // a put, delete or evict by the caller: an older removal no longer explains a miss
  }

  #pinnedBytes(except: string): number {
    let sum = 0;
    for (const [id, e] of this.#device.lru()) if (e.meta.pinned && id !== except) sum += e.bytes;
    return sum;
  }

  /** Takes a session out of the hot tier, releasing its device memory and the chunks it carries. */
  async #dropHot(id: string): Promise<void> {
    const e = this.#device.delete(id);
    if (!e) return;
    e.lease?.release();
    await this.#releaseCarry(e.carry);
    if (e.gpu) await e.gpu.free();
  }

  /**
   * Holds the chunks of the version of `id` the store has now (its host entry's, its disk
   * manifest's, and what its hot entry carries), for a new version about to replace it.
   */
  #carryOf(id: string): Carry {
    const host = new Set<string>(this.#device.peek(id)?.carry?.host ?? []);
    for (const c of this.#host.peek(id)?.chunks ?? []) host.add(c.key);
    const disk = new Set<string>(this.#device.peek(id)?.carry?.disk ?? []);
    for (const c of this.#disk.meta(id)?.chunks ?? []) disk.add(c.key);
    const carry: Carry = { host: [...host].filter((k) => this.#host.chunks.ref(k)), disk: [...disk].filter((k) => this.#disk.hasChunk(k)) };
    this.#disk.pinChunks(carry.disk);
    return carry;
  }

  async #releaseCarry(carry: Carry | undefined): Promise<void> {
    if (!carry) return;
    const { host, disk } = carry;
    carry.host = [];
    carry.disk = [];
    this.#host.chunks.release(host);
    if (disk.length > 0) await this.#disk.unpinChunks(disk);
  }




  /** #forget, running undo (release a new copy) if it fails. */
  async #forgetOr(id: string, undo: () => Promise<void> | void | undefined): Promise<void> {
    try {
      await this.#forget(id);
    } catch (err) {
      await undo();
      throw err;
    }
  }

  /** Removes a session from every tier (no event). */
  async #forget(id: string): Promise<void> {
    await this.#dropHot(id);
    this.#host.drop(id);
    if (this.#disk.has(id)) await this.#disk.delete(id);
    // The remote keeps the previous version until the new one leaves the hot tier (or a delete).
    this.#onRemote.delete(id);
  }


  /** The disk record of a session (a manifest of its chunks with its tail), written with the chunks the disk lacks. */
  async #persist(e: HostEntry): Promise<void> {
    const chunkBlobs = new Map<string, Uint8Array>();
    for (const c of e.chunks) {
      if (!this.#disk.hasChunk(c.key)) chunkBlobs.set(c.key, this.#host.chunks.block(c.key)!.read());
    }
    await this.#disk.putMany([{ meta: this.#recordOf(e.meta, e.chunks), blob: e.tail.read(), chunkBlobs }]);
  }

  /** A session's record (the disk tier's, and the remote manifest's), naming its chunks. */
  #recordOf(meta: SessionMeta, chunks: readonly ChunkRef[]): Omit<DiskRecordMeta, 'checksum' | 'storedBytes'> {
    const record: Omit<DiskRecordMeta, 'checksum' | 'storedBytes'> = {
      id: meta.id,
      fingerprint: this.profile.fingerprint,
      layout: meta.layout,
      tokens: meta.tokens,
      rawBytes: meta.rawBytes,
      createdAt: meta.createdAt,
      lastAccess: meta.lastAccess,
      ttlMs: meta.ttlMs,
      priority: meta.priority,
      pinned: meta.pinned,
      format: this.#format,
    };
    if (meta.attachment) record.attachment = meta.attachment;
    if (meta.tokenIds) record.tokenIds = meta.tokenIds;
    if (meta.namespace !== undefined) record.namespace = meta.namespace;
    if (chunks.length > 0) record.chunks = [...chunks];
    return record;
  }

  /**
   * Sends a session's encoded copy to the remote tier, once per version: awaited under
   * write-through, in the background otherwise. A failure is an 'error' event, never the
   * caller's: the session stays in the local tiers.
   */
  async #toRemote(e: HostEntry): Promise<void> {
    const remote = this.#remote;
    const meta = e.meta;
    if (!remote || this.#onRemote.get(meta.id) === meta) return;
    // Read now: the entry may be freed before the write runs.
    const chunks = e.chunks.map((c) => ({ key: c.key, blob: this.#host.chunks.block(c.key)!.read() }));
    const tail = e.tail.read();
    const { manifest, tailKey } = encodeRemoteManifest({ ...this.#recordOf(meta, e.chunks) }, tail);
    chunks.push({ key: tailKey, blob: tail });
    // Marked at once (a second demotion of this version sends nothing); unmarked if the write fails.
    // Sending a version again is cheap: chunks already there only have their lease renewed.
    this.#onRemote.set(meta.id, meta);
    const send = remote.putSession(meta.id, manifest, chunks, meta.ttlMs > 0 ? { ttlMs: meta.ttlMs } : {}).catch((err: unknown) => {
      if (this.#onRemote.get(meta.id) === meta) this.#onRemote.delete(meta.id);
      this.#emit('error', { id: meta.id, from: 'remote', reason: 'remote write failed', error: toError(err) });
    });
    if (this.options.writePolicy === 'write-through') return send;
    this.#remoteWrites.add(send);
    void send.finally(() => this.#remoteWrites.delete(send));
  }







  /** Makes a host entry the session's (persisted first under write-through); frees it if that fails. */
  async #installHost(entry: HostEntry): Promise<HostEntry> {
    try {
      if (this.options.writePolicy === 'write-through' && !entry.onDisk) {
        await this.#persist(entry);
        entry.onDisk = true;
      }
    } catch (err) {
      this.#host.free(entry);
      throw err;
    }
    this.#host.set(entry);
    return entry;
  }

  /**
   * device -> host (or straight to disk). The session stays hot if anything fails. A clean hot
   * session (restored and not changed since: its encoded copy is still in the host tier or on
   * disk) encodes nothing: the raw copy is dropped, and a disk copy is read back into the arena
   * when the host tier is asked for. A changed one encodes only the chunks no tier holds.
   */
  async #demote(id: string, to: 'host' | 'disk'): Promise<void> {
    const e = this.#device.peek(id);
    if (!e) return;
    const t0 = performance.now();
    // A host entry beside a hot one is always the same version: a put forgets every lower copy.
    const shadow = this.#host.peek(id);
    let entry = shadow;
    if (!entry && e.onDisk && to === 'host') entry = this.#loadFromDisk(e.meta);
    let built = false;
    if (!entry && (to === 'host' || !e.onDisk)) {
      entry = await this.#codec.encodeToHost(e.meta, await this.#codec.hostCacheOf(e), e.carry);
      entry.onDisk = e.onDisk;
      built = true;
    }
    if (to === 'host') {
      if (entry !== shadow) await this.#installHost(entry!);
      await this.#toRemote(entry!);
      await this.#dropHot(id);
      this.#emit('demote', { id, from: 'device', to: 'host', bytes: entry!.blobBytes, rawBytes: e.meta.rawBytes, ms: performance.now() - t0 });
      return;
    }
    let bytes = this.#disk.meta(id)?.storedBytes ?? 0;
    try {
      if (!e.onDisk) {
        await this.#persist(entry!);
        bytes = entry!.blobBytes;
      }
      if (this.#remote && this.#onRemote.get(id) !== e.meta) {
        if (!entry) {
          entry = this.#loadFromDisk(e.meta);
          built = entry !== undefined;
        }
        if (entry) await this.#toRemote(entry);
      }
    } finally {
      if (built) this.#host.free(entry!);
    }
    if (shadow) this.#host.drop(id);
    await this.#dropHot(id);
    this.#emit('demote', { id, from: 'device', to: 'disk', bytes, rawBytes: e.meta.rawBytes, ms: performance.now() - t0 });
  }

  /**
   * The host entry (not installed) of a clean session read back from its disk record, no
   * encoding: chunks the host tier holds are referenced, the others and the tail copied into the
   * arena. undefined when the record no longer checks out (the caller encodes instead).
   */
  #loadFromDisk(meta: SessionMeta): HostEntry | undefined {
    const r = this.#disk.get(meta.id, this.profile.fingerprint);
    if (!r.ok || r.meta.tokens !== meta.tokens || r.meta.format !== this.#format) return undefined;
    const chunks = r.meta.chunks ?? [];
    if (!this.#host.refAll(chunks, (key) => this.#disk.getChunk(key))) return undefined;
    return hostEntry(meta, chunks, HostBlock.copyOf(r.blob), true);
  }

  /** host -> disk. The blob stays in the host tier if the write fails. */
  async #spill(id: string): Promise<void> {
    const e = this.#host.peek(id);
    if (!e) return;
    const t0 = performance.now();
    if (!e.onDisk) await this.#persist(e);
    this.#host.drop(id);
    const hot = this.#device.peek(id); // the same version (see #demote): its copy is on disk now
    if (hot) hot.onDisk = true;
    this.#emit('spill', { id, from: 'host', to: 'disk', bytes: e.blobBytes, rawBytes: e.meta.rawBytes, ms: performance.now() - t0 });
  }

  /** Finds a session and restores it: as a host cache, or into a caller's device buffers. */
  async #restore(id: string, promote: boolean, into?: DeviceKvTarget): Promise<Restored | MissReason> {
    const t0 = performance.now();
    const now = Date.now();
    if (this.#remote) await this.#dropIfStale(id);
    const d = this.#device.touch(id);
    if (d) {
      d.meta.lastAccess = now;
      let r: Restored;
      if (d.gpu && into) {
        await d.gpu.copyTo(into);
        r = { fresh: true, meta: d.meta, tier: 'device', positions: Int32Array.from(d.gpu.positions) };
      } else if (d.gpu) {
        const cache = await d.gpu.toHost();
        r = { cache, fresh: true, meta: d.meta, tier: 'device', positions: cache.positions! };
      } else {
        r = { cache: d.cache, fresh: false, meta: d.meta, tier: 'device', positions: d.cache!.positions!, ...(d.lease ? { lease: d.lease } : {}) };
      }
      return r;
    }
    const h = this.#host.touch(id);
    if (h) {
      let got: Decoded;
      try {
        const tail = h.tail.handle;
        got = await this.#codec.decodeRecord(this.#copyFromHot(h.meta, this.#codec.partsOf(h.chunks, (c) => this.#host.chunks.block(c.key)?.handle, tail)), this.#format, h.meta, into, promote && this.#fitsHot(id, h.meta));
      } catch (err) {
        return this.#badRecord(id, 'host', err);
      }
      h.meta.lastAccess = now;
      if (got.hot) this.#promote(id, h.meta, got.hot, h.onDisk, 'host', h.blobBytes, t0, got.lease);
      return { ...got, fresh: got.hot?.cache !== got.cache, meta: h.meta, tier: 'host' };
    }
    const r = this.#disk.get(id, this.profile.fingerprint, now);
    if (!r.ok) {
      if (r.reason === 'corrupt') return this.#badRecord(id, 'disk', new KvtcError('E_CORRUPT', r.detail));
      if (r.reason === 'missing' && this.#remote) {
        const found = await this.#restoreRemote(id, promote, into, t0);
        if (found !== undefined) return found;
      }
      this.#counters.misses++;
      if (r.reason === 'missing') return this.#gone.get(id) ?? 'absent';
      if (r.reason === 'expired') {
        await this.#disk.delete(id);
        this.#left(id, 'expired');
        this.#emit('expire', { id, from: 'disk' });
        return 'expired';
      }
      // Another profile's record (a store opened with foreignRecords: 'miss') is left as it is.
      return 'profile-mismatch';
    }
    const meta = sessionMetaOf(r.meta, now);
    let got: Decoded;
    try {
      let first: Uint8Array | undefined = r.blob;
      const load = () => {
        const b = first ?? this.#reload(id);
        first = undefined;
        return b;
      };
      const chunk = (c: ChunkRef) => {
        if (!this.#disk.hasChunk(c.key)) return undefined;
        return () => {
          const b = this.#disk.getChunk(c.key);
          if (!b) throw new KvtcError('E_CORRUPT', `chunk ${c.key} of '${id}' is missing or has the wrong size`);
          return b;
        };
      };
      got = await this.#codec.decodeRecord(this.#copyFromHot(meta, this.#codec.partsOf(r.meta.chunks ?? [], chunk, load)), r.meta.format, meta, into, promote && this.#fitsHot(id, meta));
    } catch (err) {
      return this.#badRecord(id, 'disk', err);
    }
    this.#disk.touch(id, now);
    if (got.hot) this.#promote(id, meta, got.hot, true, 'disk', r.meta.storedBytes, t0, got.lease);
    return { ...got, fresh: got.hot?.cache !== got.cache, meta, tier: 'disk' };
  }




  /**
   * Whether promoting keeps the hot tier satisfiable: a session larger than the tier, or a pinned
   * one that would push pinned bytes past capacity, is served from its tier without moving.
   */
  #fitsHot(id: string, meta: SessionMeta): boolean {
    const cap = this.options.device.capacityBytes;
    const bytes = meta.rawBytes + overheadOf(meta, true);
    if (bytes > cap) return false;
    return !meta.pinned || bytes + this.#pinnedBytes(id) <= cap;
  }

  /** The blob of a disk record, read again (a retry after its first copy was transferred away). */
  #reload(id: string): Uint8Array {
    const r = this.#disk.get(id, this.profile.fingerprint);
    if (!r.ok) throw new KvtcError('E_CORRUPT', `disk record ${id} changed during a restore: ${r.reason}`);
    return r.blob;
  }

  /**
   * Makes a restored session hot. Its encoded copy stays where it was (host entry, disk record):
   * the session is clean, and demoting it again encodes nothing (#demote).
   */
  #promote(id: string, meta: SessionMeta, hot: HotCache, onDisk: boolean, from: Tier, bytes: number, t0: number, lease: Lease | undefined): void {
    const overhead = overheadOf(meta, true);
    this.#device.set(id, { meta, ...hot, bytes: meta.rawBytes + overhead, overhead, onDisk, ...(lease ? { lease } : {}) });
    this.#emit('promote', { id, from, to: 'device', bytes, rawBytes: meta.rawBytes, ms: performance.now() - t0 });
  }

  /**
   * With a remote tier, another process may have put a newer version of a session this store
   * holds (a fleet without session affinity): the local copy is compared with the remote
   * manifest's version (its put time, createdAt) and, when the remote's is newer, dropped, so the
   * lookup goes on to the remote. One manifest read per get; a remote that cannot answer leaves the
   * local copy served. Two puts of one id within the same millisecond count as one version.
   */
  async #dropIfStale(id: string): Promise<void> {
    // On a hot path (every get): the local version read without copying any record.
    const local = this.#device.peek(id)?.meta.createdAt ?? this.#host.peek(id)?.meta.createdAt ?? this.#disk.createdAtOf(id);
    if (local === undefined) return;
    const peek = await this.#remote!.peekManifest(id);
    if (!peek.ok) return;
    const d = decodeRemoteManifest(peek.manifest, id);
    if (!d.ok || d.meta.createdAt <= local) return;
    const from = this.#tierOf(id) ?? 'disk';
    await this.#forget(id);
    this.#emit('evict', { id, from, to: 'remote' }); // superseded: the remote's newer version is restored instead
  }

  /**
   * A session missing locally, looked up on the remote tier: its manifest is checked like a disk
   * record (profile, layout, chunk sizes, the tail's checksum) and decoded like one; promoted like
   * any hit. undefined when the remote does not have it (absent, slow, unreachable: a miss).
   */
  async #restoreRemote(id: string, promote: boolean, into: DeviceKvTarget | undefined, t0: number): Promise<Restored | MissReason | undefined> {
    const g = await this.#remote!.getSession(id);
    if (!g.ok) {
      if (g.reason !== 'corrupt' && g.reason !== 'profile-mismatch') return undefined;
      this.#counters.misses++;
      return g.reason; // the remote reported it ('corrupt' event)
    }
    const d = decodeRemoteManifest(g.manifest, id);
    const bad = (detail: string) => this.#badRecord(id, 'remote', new KvtcError('E_CORRUPT', detail));
    if (!d.ok) return bad(d.detail);
    const m = d.meta;
    if (m.fingerprint !== this.profile.fingerprint) return bad(`remote session '${id}' was encoded with profile ${m.fingerprint}`);
    const tail = g.chunks.get(d.tailKey);
    if (!tail || tail.byteLength !== m.storedBytes || crc32c(tail) >>> 0 !== m.checksum) return bad(`remote session '${id}': its tail does not match its manifest`);
    const meta = sessionMetaOf(m, Date.now());
    let got: Decoded;
    try {
      // Each part is read as a copy (a pool task transfers what it is given; a retry reads it again).
      const chunk = (c: ChunkRef) => {
        const b = g.chunks.get(c.key);
        return b && b.byteLength === c.bytes ? () => new Uint8Array(b) : undefined;
      };
      got = await this.#codec.decodeRecord(this.#copyFromHot(meta, this.#codec.partsOf(m.chunks ?? [], chunk, () => new Uint8Array(tail))), m.format, meta, into, promote && this.#fitsHot(id, meta));
    } catch (err) {
      return this.#badRecord(id, 'remote', err);
    }
    this.#onRemote.set(id, meta);
    this.#index(meta);
    // The local tiers cache what the remote sent: a host entry of the same bytes, so the session is
    // clean (demoting it encodes nothing).
    const chunks = m.chunks ?? [];
    if (this.#host.refAll(chunks, (key) => g.chunks.get(key))) this.#host.set(hostEntry(meta, chunks, HostBlock.copyOf(tail), false));
    if (got.hot) this.#promote(id, meta, got.hot, false, 'remote', g.manifest.byteLength, t0, got.lease);
    return { ...got, fresh: got.hot?.cache !== got.cache, meta, tier: 'remote' };
  }

  /** A record that fails a check is a miss: report it, take it out, never return its data. */
  async #badRecord(id: string, from: Tier, err: unknown): Promise<MissReason> {
    const error = toError(err);
    if (error.code !== 'E_CORRUPT' && error.code !== 'E_PROFILE_MISMATCH') throw error;
    this.#counters.misses++;
    if (from === 'host') {
      this.#host.drop(id);
    } else if (from === 'remote') {
      this.#onRemote.delete(id); // the remote deletes values that fail its own checks; a decode failure stays there
    } else {
      await this.#disk.quarantine(id, error.message);
    }
    this.#unindexIfGone(id);
    this.#emit('corrupt', { id, from, reason: error.message, error });
    return 'corrupt';
  }

  /**
   * Resolves once every operation queued so far, and the policy work it caused (demotions, spills,
   * evictions after a promotion), is done: capacities hold again. Gets do not wait for that work.
   */
  async settled(): Promise<void> {
    this.#checkOpen();
    await this.#drain();
  }

  /** Starts rebalancing without waiting for it (its failures are 'error' events). */
  #rebalanceLater(): void {
    this.#rebalance().catch((err: unknown) => this.#emit('error', { id: '', reason: 'rebalance failed', error: toError(err) }));
  }

  /** Restores the capacity invariants; one loop at a time, rerun if asked meanwhile. */
  #rebalance(): Promise<void> {
    if (this.#closed) return Promise.resolve(); // close() flushes every tier itself
    if (this.#rebalancing) {
      this.#rebalanceAgain = true;
      return this.#rebalancing;
    }
    const run = async () => {
      do {
        this.#rebalanceAgain = false;
        await this.#rebalanceOnce();
      } while (this.#rebalanceAgain);
    };
    this.#rebalancing = run().finally(() => {
      this.#rebalancing = undefined;
    });
    return this.#rebalancing;
  }

  /**
   * One pass over the tiers, each brought back under its capacity. A move is made for the
   * version of the session it was chosen for (a replacement queued meanwhile is left alone), and
   * a move that fails skips that session for the rest of the pass instead of stalling the tier.
   */
  async #rebalanceOnce(): Promise<void> {
    const o = this.options;
    const failed = new Set<string>();
    // Hot tier: least-recently-used unpinned sessions, lowest priority first.
    while (this.#device.bytes > o.device.capacityBytes) {
      const victim = this.options.policy.deviceVictim(candidates(this.#device, (e) => !e.meta.pinned && !failed.has(e.meta.id)));
      if (!victim || !this.#device.has(victim) || failed.has(victim)) break;
      const chosen = this.#device.peek(victim);
      const demote = async () => {
        const e = this.#device.peek(victim);
        if (e === chosen && e && !e.meta.pinned) await this.#demote(victim, 'host');
      };
      if (!(await this.#try(victim, 'device', demote))) failed.add(victim);
    }
    while (this.#host.bytes > o.host.capacityBytes) {
      const victim = this.options.policy.hostVictim(candidates(this.#host, (e) => !failed.has(e.meta.id)));
      if (!victim || !this.#host.has(victim) || failed.has(victim)) break;
      const chosen = this.#host.peek(victim);
      const spill = async () => {
        if (this.#host.peek(victim!) === chosen) await this.#spill(victim!);
      };
      if (!(await this.#try(victim, 'host', spill))) failed.add(victim);
    }
    // What is left above capacity is held by hot sessions for their next demotion: let go of it.
    for (const [, e] of this.#device.lru()) {
      if (this.#host.bytes <= o.host.capacityBytes) break;
      if (e.carry?.host.length) {
        this.#host.chunks.release(e.carry.host);
        e.carry.host = [];
      }
    }
    while (this.#disk.footprintBytes > o.disk.capacityBytes) {
      const victim = this.#disk.lruVictim(failed);
      if (!victim) break;
      const generation = this.#disk.generation(victim);
      const evict = async () => {
        if (this.#disk.generation(victim) !== generation) return; // replaced meanwhile: a newer decision applies
        const last = this.#tierOf(victim) === 'disk';
        await this.#disk.delete(victim);
        // A copy of a hot or warm session is just dropped; a disk-only session leaves the store.
        for (const t of [this.#device.peek(victim), this.#host.peek(victim)]) if (t) t.onDisk = false;
        if (last) {
          this.#left(victim, 'evicted');
          this.#emit('evict', { id: victim, from: 'disk' });
        }
      };
      if (!(await this.#try(victim, 'disk', evict))) failed.add(victim);
    }
  }

  /** Runs a policy move on the session's chain; failures become 'error' events. */
  async #try(id: string, from: Tier, fn: () => Promise<void>): Promise<boolean> {
    try {
      await this.#serial(id, fn);
      return true;
    } catch (err) {
      this.#emit('error', { id, from, reason: 'policy move failed', error: toError(err) });
      return false;
    }
  }

  /** Idle demotions, idle spills and TTL expiry. */
  #sweep(): void {
    if (this.#closed) return;
    const now = Date.now();
    const o = this.options;
    const jobs: Promise<unknown>[] = [];
    if (o.device.idleMs > 0) {
      for (const [id, e] of this.#device.lru()) {
        if (this.#isIdle('device', e, now)) jobs.push(this.#try(id, 'device', () => this.#idle(id, 'device')));
      }
    }
    if (o.host.idleMs > 0) {
      for (const [id, e] of this.#host.lru()) {
        if (this.#isIdle('host', e, now)) jobs.push(this.#try(id, 'host', () => this.#idle(id, 'host')));
      }
    }
    for (const id of this.#disk.expired(now)) {
      if (this.#device.has(id) || this.#host.has(id)) continue; // in use above: not idle
      const generation = this.#disk.generation(id);
      jobs.push(
        this.#serial(id, async () => {
          // Decided for this record: a newer version put meanwhile (its own TTL, or none) stays.
          if (this.#tierOf(id) !== 'disk' || this.#disk.generation(id) !== generation || !this.#disk.isExpired(id, Date.now())) return;
          await this.#disk.delete(id);
          this.#left(id, 'expired');
          this.#emit('expire', { id, from: 'disk' });
        }).catch((err: unknown) => this.#emit('error', { id, from: 'disk', reason: 'expiry failed', error: toError(err) })),
      );
    }
    if (jobs.length) void Promise.allSettled(jobs).then(() => this.#rebalance());
  }

  /** Re-checks idleness on the chain (the session may have been used meanwhile). */
  async #idle(id: string, tier: 'device' | 'host'): Promise<void> {
    const now = Date.now();
    if (tier === 'device') {
      const e = this.#device.peek(id);
      if (e && this.#isIdle('device', e, now)) await this.#demote(id, 'host');
    } else {
      const e = this.#host.peek(id);
      if (e && this.#isIdle('host', e, now)) await this.#spill(id);
    }
  }

  /** The policy's idleness verdict; pinned sessions are never idle in the hot tier. */
  #isIdle(tier: 'device' | 'host', e: { meta: SessionMeta; bytes: number }, now: number): boolean {
    if (tier === 'device' && e.meta.pinned) return false;
    return this.options.policy.isIdle(tier, policyEntry(e.meta, e.bytes), now, tier === 'device' ? this.options.device.idleMs : this.options.host.idleMs);
  }
}

/** A tier's sessions as the policy sees them, least recently used first, filtered by `keep`. */
function* candidates<T extends { meta: SessionMeta; bytes: number }>(tier: { lru(): IterableIterator<[string, T]> }, keep: (e: T) => boolean): Generator<PolicyEntry> {
  for (const [, e] of tier.lru()) if (keep(e)) yield policyEntry(e.meta, e.bytes);
}

/** What the store keeps of a session read from a record (disk, or the remote's manifest). */
function sessionMetaOf(r: DiskRecordMeta, lastAccess: number): SessionMeta {
  const meta: SessionMeta = {
    id: r.id,
    layout: r.layout,
    tokens: r.tokens,
    rawBytes: r.rawBytes,
    pinned: r.pinned,
    priority: r.priority,
    ttlMs: r.ttlMs,
    createdAt: r.createdAt,
    lastAccess,
  };
  if (r.attachment) meta.attachment = r.attachment;
  if (r.tokenIds) meta.tokenIds = r.tokenIds;
  if (r.namespace !== undefined) meta.namespace = r.namespace;
  return meta;
}

/** Token ids as the index keeps them: an Int32Array copy; E_OPTIONS naming `field` for anything else. */
/** The first `n` tokens of a cache, as a cache of its own (a copy). */
function sliceCache(c: KvCache, n: number): KvCache {
  const row = rowValues(c.layout);
  const cut = (a: ArrayBufferView) => (a as Float32Array | Uint16Array).slice(0, n * row);
  return { layout: { ...c.layout }, tokens: n, positions: (c.positions ?? Int32Array.from({ length: c.tokens }, (_, i) => i)).slice(0, n), keys: c.keys.map(cut), values: c.values.map(cut) };
}

