/**
 * The remote tier: sessions (an opaque manifest naming content-addressed chunks) in a Redis or
 * Valkey server, or a Redis Cluster, shared by every process pointed at it.
 *
 * Consistency and garbage collection: leases, no reference counts.
 * - Every value has an expiry. A manifest lives `ttl` (the put's, stored in its frame); a chunk
 *   lives at least `ttl + grace` past the last put or read of any manifest naming it. Scripts only
 *   ever lengthen a lease (remote-scripts.ts), so concurrent writers and readers can only add time.
 * - A put renews or writes every chunk first and the manifest last, and gives up before the
 *   manifest if more than grace/2 has passed since it started. When the manifest lands (at t2), each
 *   chunk it names was renewed at some t1 > t2 − grace/2 to expire at t1 + ttl + grace > t2 + ttl:
 *   no chunk of a live manifest expires before it. A get renews the chunks first, then the manifest
 *   (only if it is still the one read), with the manifest's own ttl: the same inequality holds.
 * - Deleting a session deletes its manifest only; its chunks expire by their lease when nothing
 *   renews them. A chunk another live manifest names was renewed by that manifest's put or reads,
 *   so no delete, and no expiry, removes it first. Nothing needs two keys at once, which is why
 *   this works on a cluster where a script may touch one hash slot only.
 * - Concurrent puts of one id: each writes its chunks before its manifest, and the manifest is one
 *   SET of one key, so the last manifest to land wins, whole; chunks are content-addressed (same
 *   key, same bytes), so interleaved chunk writes never mix two sessions' data.
 * - A writer killed mid-put leaves chunks without a manifest: invisible, they expire by lease.
 * What leases cannot prevent: the server evicting keys under `maxmemory`, FLUSHALL, a failover to
 * a replica that missed writes, a server that stalls for longer than the grace between executing
 * a caller's chunk renewals and its manifest write (the client gives up long before, but a
 * command already sent still runs). Then a manifest may name a missing chunk: the reader checks every
 * chunk, answers a miss ('absent'), and deletes that manifest if nobody replaced it meanwhile.
 *
 * Trust: every value is framed (remote-frame.ts) and checked before use; a bad one is a miss
 * 'corrupt' with a 'corrupt' event, and is deleted if it still holds the bytes that failed.
 *
 * Faults: commands are never queued while disconnected and never resent after a reconnect, so a
 * call on a down server fails at once (get: miss 'unavailable'; put, has, delete: E_IO); a get has
 * a deadline (miss 'timeout'), a put too (E_IO); the client reconnects with capped exponential
 * backoff. Connection faults are counted and reported as 'error' events, never thrown into calls.
 */
import { Cluster, Redis } from 'ioredis';
import { EventEmitter } from 'eventemitter3';
import { KvtcError, describeValue, invalidParameter, toKvtcError } from '../errors.js';
import { FrameKind, readFrame, readManifestBody, writeFrame, writeManifestBody } from './remote-frame.js';
import { RemoteKeys, checkChunkKey, checkFingerprint, checkSessionId } from './remote-keys.js';
import { checkTtl, resolveRemoteOptions, type RemoteOptions, type ResolvedRemoteOptions } from './remote-options.js';
import { defineScripts, type ScriptedCommands } from './remote-scripts.js';

export type { RemoteOptions } from './remote-options.js';

/** Why getSession() found no session. */
export type RemoteMissReason = 'absent' | 'corrupt' | 'profile-mismatch' | 'timeout' | 'unavailable';

/** getSession()'s answer. `chunks` holds the payload of every chunk asked for, by chunk key. */
export type RemoteGetResult =
  | { ok: true; manifest: Uint8Array; chunks: Map<string, Uint8Array> }
  | { ok: false; reason: RemoteMissReason; detail?: string };

/** A chunk of a session: its content-addressed key (32–64 lowercase hex digits) and its bytes. */
export interface RemoteChunk {
  key: string;
  blob: Uint8Array;
}

/** Counters since connect(). Byte counts are the keys and values of commands, not RESP framing. */
export interface RemoteStats {
  /** Whether the client is connected and ready now. */
  connected: boolean;
  bytesSent: number;
  bytesReceived: number;
  /** Connection and command faults (each also an 'error' event). */
  errors: number;
  gets: number;
  hits: number;
  /** Misses by reason. */
  misses: Record<RemoteMissReason, number>;
  /** Puts that completed (their manifest written). */
  puts: number;
  /** Chunks a put had to send (the others were already on the remote: only their lease was renewed). */
  chunksWritten: number;
  /** Chunks a put found already there. */
  chunksReused: number;
}

/** Payload of 'corrupt': a value that failed its checks (it is deleted if unchanged since). */
export interface RemoteCorruptEvent {
  id: string;
  /** The chunk key, when the bad value was a chunk (else it was the manifest). */
  chunk?: string;
  reason: 'corrupt' | 'profile-mismatch';
  detail: string;
}

interface RemoteEvents {
  /** A connection or command fault. The tier keeps working (reconnecting as needed). */
  error: (error: KvtcError) => void;
  /** A bad value was read. */
  corrupt: (e: RemoteCorruptEvent) => void;
  /** The connection is (again) ready. */
  ready: () => void;
}

/** Capped exponential backoff with jitter, in milliseconds, for reconnect attempt `times` (1, 2, …). */
function backoffMs(times: number): number {
  const cap = Math.min(2000, 50 * 2 ** Math.min(times, 6));
  return Math.round(cap / 2 + (Math.random() * cap) / 2);
}

/** Runs `fn` on every item with at most `limit` in flight; rejects with the first failure. */
async function forEachLimited<T>(items: readonly T[], limit: number, fn: (item: T, i: number) => Promise<void>): Promise<void> {
  let next = 0;
  const lane = async (): Promise<void> => {
    while (next < items.length) {
      const i = next++;
      await fn(items[i]!, i);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, lane));
}

/** Carries what the caller's chunkKeys() threw out of getSession() as it was, not as a remote fault. */
class CallerError {
  constructor(readonly cause: unknown) {}
}

/** Marks an operation past its deadline, so that its remaining steps do nothing. */
class Deadline {
  expired = false;
  readonly #timer: NodeJS.Timeout;
  readonly promise: Promise<'deadline'>;
  constructor(ms: number) {
    let fire!: () => void;
    this.promise = new Promise((resolve) => (fire = () => resolve('deadline')));
    this.#timer = setTimeout(() => {
      this.expired = true;
      fire();
    }, ms);
  }
  clear(): void {
    clearTimeout(this.#timer);
  }
}

/** The shared remote tier. Create with RemoteTier.connect(); close() when done. */
export class RemoteTier {
  readonly #o: ResolvedRemoteOptions;
  readonly #fingerprint: string;
  readonly #keys: RemoteKeys;
  readonly #client: Redis | Cluster;
  readonly #cmd: ScriptedCommands;
  readonly #events = new EventEmitter();
  #closed = false;
  #usedMemory = { bytes: 0, at: -Infinity };
  readonly #stats = {
    bytesSent: 0,
    bytesReceived: 0,
    errors: 0,
    gets: 0,
    hits: 0,
    puts: 0,
    chunksWritten: 0,
    chunksReused: 0,
    misses: { absent: 0, corrupt: 0, 'profile-mismatch': 0, timeout: 0, unavailable: 0 } as Record<RemoteMissReason, number>,
  };

  private constructor(o: ResolvedRemoteOptions, fingerprint: string) {
    this.#o = o;
    this.#fingerprint = fingerprint;
    this.#keys = new RemoteKeys(o.namespace, fingerprint);
    const common = {
      // Fail fast instead of queueing while disconnected, and never resend a command after a
      // reconnect: a put's manifest arriving late could outlive the leases of its chunks.
      enableOfflineQueue: false as const,
      autoResendUnfulfilledCommands: false,
      maxRetriesPerRequest: 0,
      // Commands in flight when the server stalls are failed by the client too, not only raced.
      commandTimeout: Math.max(o.timeoutMs, o.putTimeoutMs),
      connectTimeout: o.connectTimeoutMs,
      lazyConnect: true,
      ...(o.username !== undefined ? { username: o.username } : {}),
      ...(o.password !== undefined ? { password: o.password } : {}),
      ...(o.tls !== undefined ? { tls: o.tls } : {}),
    };
    if (o.cluster) {
      const { enableOfflineQueue: _q, ...redisOptions } = common;
      const copts = {
        redisOptions,
        enableOfflineQueue: false,
        enableAutoPipelining: true,
        lazyConnect: true,
        scaleReads: 'master' as const,
        clusterRetryStrategy: backoffMs,
        slotsRefreshTimeout: o.connectTimeoutMs,
      };
      this.#client = new Cluster(o.nodes, copts);
    } else {
      this.#client = new Redis({ ...common, host: o.nodes[0]!.host, port: o.nodes[0]!.port, db: o.db, enableAutoPipelining: true, retryStrategy: backoffMs });
    }
    this.#cmd = defineScripts(this.#client);
    this.#client.on('error', (err: unknown) => this.#fault(err, 'connection'));
    // A cluster reports a failing node's errors as 'node error'.
    this.#client.on('node error', (err: unknown) => this.#fault(err, 'cluster node'));
    this.#client.on('ready', () => this.#events.emit('ready'));
  }

  /**
   * Connects to the server (or cluster) of `options.url`, for values of the codec profile
   * `fingerprint` (32 lowercase hex digits). Options are checked first (E_OPTIONS). With
   * `waitForReady` (the default) it resolves once the server answers, and fails with E_IO when the
   * first attempt fails (refused, bad credentials, TLS) or takes over `connectTimeoutMs`; without,
   * it resolves at once and keeps reconnecting in the background with backoff.
   */
  static async connect(options: RemoteOptions, fingerprint: string): Promise<RemoteTier> {
    const o = resolveRemoteOptions(options);
    checkFingerprint(fingerprint, 'fingerprint');
    const tier = new RemoteTier(o, fingerprint);
    const first = tier.#client.connect().catch(() => undefined);
    if (!o.waitForReady) return tier;
    let timer: NodeJS.Timeout | undefined;
    const ready = await Promise.race([
      first.then(() => tier.#client.status === 'ready'),
      new Promise<boolean>((resolve) => (timer = setTimeout(() => resolve(false), o.connectTimeoutMs))),
    ]);
    clearTimeout(timer);
    if (!ready) {
      tier.#client.disconnect();
      tier.#closed = true;
      throw new KvtcError('E_IO', `remote ${o.nodes.map((n) => `${n.host}:${n.port}`).join(',')} not reachable within ${o.connectTimeoutMs} ms`);
    }
    return tier;
  }

  /** Subscribes to 'error' (faults), 'corrupt' (bad values read) or 'ready' (connected again). A throwing listener is reported as a process warning. */
  on<E extends keyof RemoteEvents>(event: E, fn: RemoteEvents[E]): this {
    this.#events.on(event, (...args: unknown[]) => {
      try {
        (fn as (...a: unknown[]) => void)(...args);
      } catch (err) {
        process.emitWarning(`a remote tier '${event}' listener threw: ${String(err)}`, { code: 'KVTC_LISTENER' });
      }
    });
    return this;
  }

  /** The key prefix of this namespace and profile (tools and tests: `SCAN 0 MATCH <prefix>*`). */
  get keyPrefix(): string {
    return this.#keys.prefix;
  }

  /** The Redis key that holds session `id`'s manifest (tools and tests). */
  manifestKey(id: string): string {
    return this.#keys.manifest(checkSessionId(id, 'id'));
  }

  /** The Redis key that holds chunk `key` (tools and tests). */
  chunkKey(key: string): string {
    return this.#keys.chunk(checkChunkKey(key, 'key'));
  }

  /**
   * Stores session `id`: renews the lease of every chunk already on the remote, writes the others
   * (framed), then writes the manifest, which names every chunk of `chunks`, with its TTL
   * (`opts.ttlMs`, default the tier's). Resolves once the manifest is written: from then on any
   * process sees the whole session; before, none of it. Replaces a previous session of that id.
   * Fails with E_IO (remote unreachable, slow past putTimeoutMs or a command failed: the manifest
   * is then not written, unless it was already sent, which the message says; either way the
   * session is whole or absent), E_CAPACITY (capacityBytes), E_OPTIONS (bad arguments), E_CLOSED.
   */
  async putSession(id: string, manifest: Uint8Array, chunks: readonly RemoteChunk[], opts: { ttlMs?: number } = {}): Promise<void> {
    this.#checkOpen();
    checkSessionId(id, 'id');
    if (!(manifest instanceof Uint8Array)) throw invalidParameter('manifest', 'a Uint8Array', manifest);
    if (!Array.isArray(chunks)) throw invalidParameter('chunks', 'an array of { key, blob }', chunks);
    const unique = new Map<string, Uint8Array>();
    chunks.forEach((c, i) => {
      checkChunkKey(c?.key, `chunks[${i}].key`);
      if (!(c.blob instanceof Uint8Array)) throw invalidParameter(`chunks[${i}].blob`, 'a Uint8Array', c.blob);
      if (!unique.has(c.key)) unique.set(c.key, c.blob);
    });
    const ttl = opts.ttlMs === undefined ? this.#o.ttlMs : checkTtl(opts.ttlMs, 'opts.ttlMs');
    const lease = ttl + this.#o.leaseGraceMs;
    this.#requireReady('putSession');
    const keys = [...unique.keys()];
    let bytes = manifest.length;
    for (const b of unique.values()) bytes += b.length;
    await this.#admit(bytes);

    const started = performance.now();
    const deadline = new Deadline(this.#o.putTimeoutMs);
    let manifestSent = false;
    const work = (async () => {
      const present = new Array<boolean>(keys.length);
      await forEachLimited(keys, this.#o.maxInFlight, async (k, i) => {
        if (deadline.expired) return;
        const rk = this.#keys.chunk(k);
        this.#stats.bytesSent += rk.length;
        present[i] = (await this.#cmd.kvtcRenew(rk, lease)) === 1;
      });
      await forEachLimited(keys, this.#o.maxInFlight, async (k, i) => {
        if (deadline.expired || present[i]) return;
        const rk = this.#keys.chunk(k);
        const frame = writeFrame(FrameKind.chunk, this.#fingerprint, k, unique.get(k)!);
        this.#stats.bytesSent += rk.length + frame.length;
        // Not there when renewed: written unless a concurrent writer of the same content got
        // there first, whose lease this one then lengthens (content-addressed: same bytes).
        if ((await this.#client.set(rk, frame, 'PX', lease, 'NX')) === null) await this.#cmd.kvtcRenew(rk, lease);
      });
      const elapsed = performance.now() - started;
      if (deadline.expired) return;
      if (elapsed > this.#o.leaseGraceMs / 2) {
        throw new KvtcError('E_IO', `putSession(${describeValue(id)}) spent ${Math.round(elapsed)} ms on its chunks, over half the lease grace (${this.#o.leaseGraceMs} ms): manifest not written`);
      }
      const mk = this.#keys.manifest(id);
      const frame = writeFrame(FrameKind.manifest, this.#fingerprint, id, writeManifestBody(keys, manifest), ttl);
      this.#stats.bytesSent += mk.length + frame.length;
      manifestSent = true;
      await this.#client.set(mk, frame, 'PX', ttl);
      let written = 0;
      for (const p of present) if (!p) written++;
      this.#stats.chunksWritten += written;
      this.#stats.chunksReused += keys.length - written;
      this.#stats.puts++;
    })();
    try {
      const r = await Promise.race([work, deadline.promise]);
      if (r === 'deadline') {
        work.catch(() => undefined);
        const outcome = manifestSent ? 'its manifest was sent and may still land, whole' : 'manifest not written';
        throw new KvtcError('E_IO', `putSession(${describeValue(id)}) timed out after ${this.#o.putTimeoutMs} ms (${outcome})`);
      }
    } catch (err) {
      throw this.#commandFault(err, 'putSession');
    } finally {
      deadline.clear();
    }
  }

  /**
   * Reads session `id`: its manifest and the chunks it names, each checked (frame, CRC-32C,
   * profile, name), with every lease renewed. `chunkKeys`, if given, receives the manifest and the
   * chunk keys it names, and returns the ones to fetch (a caller holding some chunks locally): the
   * others are only checked present and renewed. Never throws for the remote's faults: a miss
   * says why ('absent', 'corrupt', 'profile-mismatch', 'timeout' past timeoutMs, 'unavailable').
   * Throws E_CLOSED after close(), E_OPTIONS for a bad id or a chunkKeys answer naming a chunk
   * the manifest does not, and rethrows what chunkKeys throws. The returned bytes are views into
   * the client's reply buffers: copy what is kept for long.
   */
  async getSession(id: string, chunkKeys?: (manifest: Uint8Array, named: readonly string[]) => Iterable<string>): Promise<RemoteGetResult> {
    this.#checkOpen();
    checkSessionId(id, 'id');
    this.#stats.gets++;
    if (this.#client.status !== 'ready') return this.#miss('unavailable', `client ${this.#client.status}`);
    const deadline = new Deadline(this.#o.timeoutMs);
    const work = this.#get(id, chunkKeys, deadline);
    try {
      const r = await Promise.race([work, deadline.promise]);
      if (r === 'deadline') {
        work.catch(() => undefined);
        return this.#miss('timeout', `no answer within ${this.#o.timeoutMs} ms`);
      }
      if (r.ok) this.#stats.hits++;
      else this.#stats.misses[r.reason]++;
      return r;
    } catch (err) {
      if (err instanceof CallerError) throw err.cause;
      if (err instanceof KvtcError && err.code === 'E_OPTIONS') throw err;
      const e = this.#commandFault(err, 'getSession');
      return this.#miss(/timed? ?out/i.test(e.message) ? 'timeout' : 'unavailable', e.message);
    } finally {
      deadline.clear();
    }
  }

  async #get(id: string, chunkKeys: ((manifest: Uint8Array, named: readonly string[]) => Iterable<string>) | undefined, deadline: Deadline): Promise<RemoteGetResult> {
    const mk = this.#keys.manifest(id);
    this.#stats.bytesSent += mk.length;
    const raw = await this.#client.getBuffer(mk);
    if (raw === null) return { ok: false, reason: 'absent' };
    this.#stats.bytesReceived += raw.length;
    const frame = readFrame(raw, FrameKind.manifest, this.#fingerprint, id);
    const body = 'payload' in frame ? readManifestBody(frame.payload) : undefined;
    if (!('payload' in frame) || body === undefined) {
      const fault = 'payload' in frame ? { reason: 'corrupt' as const, detail: 'malformed chunk list' } : frame;
      this.#corrupt({ id, ...fault }, mk, raw);
      return { ok: false, ...fault };
    }
    const named = body.chunkKeys;
    let want: Set<string>;
    if (chunkKeys) {
      try {
        want = new Set(chunkKeys(body.manifest, named));
      } catch (err) {
        throw new CallerError(err);
      }
      const namedSet = new Set(named);
      for (const k of want) if (!namedSet.has(k)) throw new KvtcError('E_OPTIONS', `chunkKeys() returned ${describeValue(k)}, a chunk the manifest of ${describeValue(id)} does not name`);
    } else {
      want = new Set(named);
    }
    const lease = frame.ttlMs + this.#o.leaseGraceMs;
    const chunks = new Map<string, Uint8Array>();
    let missing: string | undefined;
    let bad: RemoteCorruptEvent | undefined;
    await forEachLimited(named, this.#o.maxInFlight, async (k) => {
      if (deadline.expired || missing !== undefined || bad !== undefined) return;
      const rk = this.#keys.chunk(k);
      this.#stats.bytesSent += rk.length;
      if (!want.has(k)) {
        if ((await this.#cmd.kvtcRenew(rk, lease)) !== 1) missing ??= k;
        return;
      }
      // Pipelined together; the renewal runs right after the read, and a chunk that vanished in
      // between counts as missing, so a manifest is only renewed when all its chunks were.
      const [v, renewed] = await Promise.all([this.#client.getBuffer(rk), this.#cmd.kvtcRenew(rk, lease)]);
      if (v === null || renewed !== 1) {
        missing ??= k;
        return;
      }
      this.#stats.bytesReceived += v.length;
      const f = readFrame(v, FrameKind.chunk, this.#fingerprint, k);
      if (!('payload' in f)) {
        if (bad === undefined) {
          bad = { id, chunk: k, ...f };
          this.#corrupt(bad, rk, v);
        }
        return;
      }
      chunks.set(k, f.payload);
    });
    if (deadline.expired) return { ok: false, reason: 'timeout' };
    if (bad !== undefined) return { ok: false, reason: bad.reason, detail: `chunk ${bad.chunk}: ${bad.detail}` };
    if (missing !== undefined) {
      // Leases make this impossible unless the server lost keys (eviction, flush, failover): the
      // manifest can never be served again as it is, so it goes, unless replaced meanwhile.
      this.#cmd.kvtcDeleteIfEqual(mk, raw).catch((err: unknown) => this.#fault(err, 'delete of an incomplete manifest'));
      return { ok: false, reason: 'absent', detail: `chunk ${missing} is missing` };
    }
    // Past the deadline the caller has its miss already; renewing the manifest that late could
    // let it outlive the chunk leases renewed long before, so it is left as it is.
    if (deadline.expired) return { ok: false, reason: 'timeout' };
    const tail = raw.subarray(raw.length - 4);
    await this.#cmd.kvtcRenewIfSame(mk, frame.ttlMs, raw.length, tail);
    return { ok: true, manifest: body.manifest, chunks };
  }

  /**
   * The caller's manifest bytes of session `id`, read and checked (frame, profile, name) without
   * its chunks or any lease renewal: what a store compares its local copy's version with. Never
   * throws for the remote's faults (a miss says why, as getSession's); E_CLOSED after close().
   */
  async peekManifest(id: string): Promise<{ ok: true; manifest: Uint8Array } | { ok: false; reason: RemoteMissReason; detail?: string }> {
    this.#checkOpen();
    checkSessionId(id, 'id');
    if (this.#client.status !== 'ready') return { ok: false, reason: 'unavailable', detail: `client ${this.#client.status}` };
    const deadline = new Deadline(this.#o.timeoutMs);
    const mk = this.#keys.manifest(id);
    const work = (async () => {
      this.#stats.bytesSent += mk.length;
      const raw = await this.#client.getBuffer(mk);
      if (raw === null) return { ok: false as const, reason: 'absent' as const };
      this.#stats.bytesReceived += raw.length;
      const f = readFrame(raw, FrameKind.manifest, this.#fingerprint, id);
      const body = 'payload' in f ? readManifestBody(f.payload) : undefined;
      if (body === undefined) return { ok: false as const, reason: 'corrupt' as const };
      return { ok: true as const, manifest: body.manifest };
    })();
    try {
      const r = await Promise.race([work, deadline.promise]);
      if (r === 'deadline') {
        work.catch(() => undefined);
        return { ok: false, reason: 'timeout' };
      }
      return r;
    } catch (err) {
      const e = this.#commandFault(err, 'peekManifest');
      return { ok: false, reason: 'unavailable', detail: e.message };
    } finally {
      deadline.clear();
    }
  }

  /** Whether a manifest for `id` is on the remote and passes its checks (its chunks are not checked: getSession does). E_IO when the remote cannot answer. */
  async hasSession(id: string): Promise<boolean> {
    this.#checkOpen();
    checkSessionId(id, 'id');
    this.#requireReady('hasSession');
    try {
      const mk = this.#keys.manifest(id);
      this.#stats.bytesSent += mk.length;
      const raw = await this.#client.getBuffer(mk);
      if (raw === null) return false;
      this.#stats.bytesReceived += raw.length;
      const f = readFrame(raw, FrameKind.manifest, this.#fingerprint, id);
      return 'payload' in f && readManifestBody(f.payload) !== undefined;
    } catch (err) {
      throw this.#commandFault(err, 'hasSession');
    }
  }

  /** Deletes session `id`'s manifest; true if there was one. Its chunks expire by their leases (others may share them). E_IO when the remote cannot answer. */
  async deleteSession(id: string): Promise<boolean> {
    this.#checkOpen();
    checkSessionId(id, 'id');
    this.#requireReady('deleteSession');
    try {
      const mk = this.#keys.manifest(id);
      this.#stats.bytesSent += mk.length;
      return (await this.#client.del(mk)) === 1;
    } catch (err) {
      throw this.#commandFault(err, 'deleteSession');
    }
  }

  /** Counters since connect() (a copy). */
  stats(): RemoteStats {
    const s = this.#stats;
    return { ...s, misses: { ...s.misses }, connected: !this.#closed && this.#client.status === 'ready' };
  }

  /** Closes the connection (waiting for commands in flight, at most connectTimeoutMs). Idempotent. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([
      this.#client.quit().catch(() => undefined),
      new Promise((resolve) => (timer = setTimeout(resolve, this.#o.connectTimeoutMs))),
    ]);
    clearTimeout(timer);
    this.#client.disconnect();
    this.#events.removeAllListeners();
  }

  #checkOpen(): void {
    if (this.#closed) throw new KvtcError('E_CLOSED', 'the remote tier is closed');
  }

  #requireReady(op: string): void {
    if (this.#client.status !== 'ready') throw new KvtcError('E_IO', `${op}: remote unavailable (client ${this.#client.status})`);
  }

  #miss(reason: RemoteMissReason, detail?: string): RemoteGetResult {
    this.#stats.misses[reason]++;
    return detail === undefined ? { ok: false, reason } : { ok: false, reason, detail };
  }

  /** Refuses a put of `bytes` while the server's memory in use would pass capacityBytes. */
  async #admit(bytes: number): Promise<void> {
    const cap = this.#o.capacityBytes;
    if (cap === undefined) return;
    if (performance.now() - this.#usedMemory.at > 1000) {
      try {
        const nodes = this.#client instanceof Cluster ? this.#client.nodes('master') : [this.#client];
        const infos = await Promise.all(nodes.map((n) => n.info('memory')));
        let used = 0;
        for (const info of infos) used += Number(/^used_memory:(\d+)/m.exec(info)?.[1] ?? 0);
        this.#usedMemory = { bytes: used, at: performance.now() };
      } catch (err) {
        throw this.#commandFault(err, 'putSession (INFO memory)');
      }
    }
    if (this.#usedMemory.bytes + bytes > cap) {
      throw new KvtcError('E_CAPACITY', `remote holds ${this.#usedMemory.bytes} bytes; ${bytes} more would pass capacityBytes ${cap}`);
    }
  }

  /** A failed command: counted, reported as an 'error' event, returned as E_IO (or as it was, if already typed). */
  #commandFault(err: unknown, op: string): KvtcError {
    if (err instanceof KvtcError && err.code !== 'E_IO') return err;
    const e = err instanceof KvtcError ? err : new KvtcError('E_IO', `${op}: ${err instanceof Error ? err.message : String(err)}`, { cause: err });
    this.#report(e);
    return e;
  }

  #fault(err: unknown, what: string): void {
    const e = toKvtcError(err);
    this.#report(e.code === 'E_INTERNAL' ? new KvtcError('E_IO', `remote ${what}: ${e.message}`, { cause: err }) : e);
  }

  #report(e: KvtcError): void {
    this.#stats.errors++;
    this.#events.emit('error', e);
  }

  /** Reports a bad value and deletes it if it still holds the bytes that failed (so a later put rewrites it). */
  #corrupt(e: RemoteCorruptEvent, key: string, bytes: Buffer): void {
    this.#events.emit('corrupt', e);
    this.#cmd.kvtcDeleteIfEqual(key, bytes).catch((err: unknown) => this.#fault(err, `delete of corrupt ${key}`));
  }
}
