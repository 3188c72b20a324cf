/**
 * The store's codec workers: a Piscina pool running src/workers/worker.ts (built to
 * dist/workers/worker.js). The main thread only routes: caches go out as SharedArrayBuffer views,
 * blobs come back as host-arena handles, restored caches come back shared; disk blobs are
 * transferred.
 */
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { Piscina } from 'piscina';
import { type KvtcErrorCode, KvtcError } from '../errors.js';
import type { CodecProfile } from '../codec/profile.js';
import type { BlobFormat, DecodeResult, EncodeResult, WireCache, WireProfile, WorkerReply } from './tasks.js';
import type { OutputSlice } from '../codec/codec.js';
import type { Segment } from '../store/chain.js';

/** The compiled worker: dist/workers/worker.js, whether this module runs from src/ or dist/. */
function workerFile(): string {
  const file = fileURLToPath(new URL('../../dist/workers/worker.js', import.meta.url));
  if (!existsSync(file)) {
    throw new KvtcError('E_BACKEND', `codec worker not built (${file} is missing); run \`npm run build:ts\``);
  }
  return file;
}

/** A blob whose buffer is its own (so it can be transferred): itself, or a copy. */
function ownBuffer(blob: Uint8Array): Uint8Array {
  const own = blob.byteOffset === 0 && blob.byteLength === blob.buffer.byteLength && blob.buffer instanceof ArrayBuffer;
  return own ? blob : new Uint8Array(blob); // a copy (Buffer#slice would be a view of the same memory)
}

export interface PoolOptions {
  minThreads: number;
  maxThreads: number;
}

export class CodecPool {
  readonly #pool: Piscina;
  readonly #profile: WireProfile;
  readonly #maxThreads: number;

  constructor(profile: CodecProfile, options: PoolOptions) {
    this.#maxThreads = options.maxThreads;
    this.#pool = new Piscina({
      filename: workerFile(),
      minThreads: options.minThreads,
      maxThreads: options.maxThreads,
      idleTimeout: 30_000,
    });
    // Profile bytes are shared once; every task references the same SharedArrayBuffer.
    const bytes = profile.toBytes();
    const shared = new Uint8Array(new SharedArrayBuffer(bytes.byteLength));
    shared.set(bytes);
    this.#profile = { fingerprint: profile.fingerprint, bytes: shared };
  }

  get threads(): number {
    return this.#pool.threads.length;
  }

  /** Tasks running or queued now. */
  #busy = 0;

  /** Worker threads no task is using now (the capacity a large restore may borrow). */
  idleThreads(): number {
    return Math.max(0, this.#maxThreads - this.#busy);
  }

  #crashes = 0;
  #crashWorker = '';

  /** Test hook (src/internal/testing.ts): the next `n` tasks run on `crashWorker`, whose thread dies. */
  injectCrashes(n: number, crashWorker: string): void {
    this.#crashes = n;
    this.#crashWorker = crashWorker;
  }

  /** Tasks running on the workers (at most maxThreads: beyond that they wait here, not in Piscina). */
  #running = 0;
  /** Tasks waiting for a worker: restores (a caller waits for them) go before encodes (policy work). */
  readonly #waiting: { restore: (() => void)[]; background: (() => void)[] } = { restore: [], background: [] };

  /**
   * Runs a task when a worker is free. `task` may be a function building the task per attempt
   * (for inputs that are transferred). Decodes are restores, served before queued encodes: a
   * get never waits behind the demotions that other sessions' promotions caused.
   */
  async #run<T>(task: object | (() => { task: object; transfer: ArrayBuffer[] }), kind: 'restore' | 'background'): Promise<T> {
    this.#busy++;
    try {
      if (this.#running < this.#maxThreads) this.#running++;
      else await new Promise<void>((resolve) => this.#waiting[kind].push(resolve));
      try {
        return await this.#attempt<T>(task);
      } finally {
        // The worker goes to the next waiting task (restores first), or becomes free.
        const next = this.#waiting.restore.shift() ?? this.#waiting.background.shift();
        if (next) next();
        else this.#running--;
      }
    } finally {
      this.#busy--;
    }
  }

  async #attempt<T>(task: object | (() => { task: object; transfer: ArrayBuffer[] })): Promise<T> {
    let reply: WorkerReply | undefined;
    // A worker that dies mid-task (killed, out of memory, a crash) is replaced by Piscina; the
    // task is retried once on a fresh worker. Inputs survive a failed attempt: caches are shared,
    // arena blobs are only read, and transferred disk blobs are loaded again.
    for (let attempt = 0; reply === undefined; attempt++) {
      const crash = this.#crashes > 0;
      if (crash) this.#crashes--;
      const { task: t, transfer } = typeof task === 'function' ? task() : { task, transfer: [] };
      try {
        const options = { ...(transfer.length ? { transferList: transfer } : {}), ...(crash ? { filename: this.#crashWorker } : {}) };
        reply = (await this.#pool.run(t, options)) as WorkerReply;
      } catch (err) {
        if (attempt >= 1) throw new KvtcError('E_INTERNAL', `codec worker failed twice: ${(err as Error).message}`, { cause: err });
      }
    }
    if (!reply.ok) throw new KvtcError(reply.code as KvtcErrorCode, reply.message);
    return reply.value as T;
  }

  /**
   * Encodes a cache, or one segment of it, into the host arena (the cache's arrays are shared,
   * not copied); with `contentKey`, keyed by content and skipped when the key is known.
   */
  encode(cache: WireCache, format: BlobFormat, segment?: Segment, contentKey?: { salt: string; known: string[] }): Promise<EncodeResult> {
    return this.#run({ op: 'encode', profile: this.#profile, cache, format, ...(segment ? { segment } : {}), ...(contentKey ? { contentKey } : {}) }, 'background');
  }

  /** Decodes a host-arena blob, or a blob read from disk (transferred), into its place in a shared output. */
  decodeSlice(source: number | (() => Uint8Array), format: BlobFormat, into: OutputSlice & { expectTokens: number }, threads = 1): Promise<DecodeResult> {
    if (typeof source === 'number') return this.#run({ op: 'decode', profile: this.#profile, format, source: { handle: source }, into, threads }, 'restore');
    return this.#run(() => {
      const b = ownBuffer(source());
      return { task: { op: 'decode', profile: this.#profile, format, source: { blob: b }, into, threads }, transfer: [b.buffer as ArrayBuffer] };
    }, 'restore');
  }

  async destroy(): Promise<void> {
    await this.#pool.destroy();
  }
}
