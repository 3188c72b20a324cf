/**
 * The store's codec workers: two Piscina pools running src/workers/worker.ts (built to
 * dist/workers/worker.js). The main thread only routes: caches go out as SharedArrayBuffer views,
 * blobs come back as host-arena handles, restored caches come back shared; disk blobs are
 * transferred.
 *
 * Three priorities, set with Piscina's `niceIncrement` (Unix): the event loop above everything
 * (it routes every task, so every caller waits on it); restores (a caller waits) on the restore
 * pool, niced by FOREGROUND_NICE, like the addon's own job threads (native/job_threads.h); encodes
 * (policy work: a demotion, a put's chunks) on the background pool, niced by BACKGROUND_NICE. Each
 * worker runs the codec on its own thread (binding.ts runAddonWorkOnThisThread), so the kernel
 * schedules by those priorities: where they compete for a core, a thread niced by 5 gets a third
 * of a normal thread's share and one niced by 10 a tenth, instead of each running a full time slice.
 */
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { Piscina } from 'piscina';
import { type KvtcErrorCode, KvtcError } from '../errors.js';
import type { CodecProfile } from '../codec/profile.js';
import type { BlobFormat, DecodeResult, EncodeResult, EncodeSegment, WireCache, WireProfile, WorkerReply } from './tasks.js';
import type { OutputSlice } from '../codec/codec.js';

/** The compiled worker's entry: dist/workers/worker-entry.cjs (worker-entry.cts), whether this module runs from src/ or dist/. */
function workerFile(): string {
  const file = fileURLToPath(new URL('../../dist/workers/worker-entry.cjs', import.meta.url));
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
  /** Per pool (restores, background encodes). */
  minThreads: number;
  maxThreads: number;
}

/**
 * Nice values added to restore and background encode threads (Unix; Windows: below-normal
 * priority). 5 is a third of the event loop's weight: measured on 2 cores under the store bench's
 * multi-turn load, the main thread's wait for a core fell from 1.2–1.5 to 0.9–1.0 ms per turn.
 */
const FOREGROUND_NICE = 5;
const BACKGROUND_NICE = 10;

type TaskKind = 'restore' | 'background';

export class CodecPool {
  readonly #pools: Record<TaskKind, Piscina>;
  readonly #profile: WireProfile;
  readonly #maxThreads: number;

  constructor(profile: CodecProfile, options: PoolOptions) {
    this.#maxThreads = options.maxThreads;
    const pool = (niceIncrement: number) =>
      new Piscina({ filename: workerFile(), minThreads: options.minThreads, maxThreads: options.maxThreads, idleTimeout: 30_000, niceIncrement });
    this.#pools = { restore: pool(FOREGROUND_NICE), background: pool(BACKGROUND_NICE) };
    // Profile bytes are shared once; every task references the same SharedArrayBuffer.
    const bytes = profile.toBytes();
    const shared = new Uint8Array(new SharedArrayBuffer(bytes.byteLength));
    shared.set(bytes);
    this.#profile = { fingerprint: profile.fingerprint, bytes: shared };
  }

  /** Worker threads started (both pools). */
  get threads(): number {
    return this.#pools.restore.threads.length + this.#pools.background.threads.length;
  }

  /** Tasks running or queued now, per pool. */
  readonly #busy: Record<TaskKind, number> = { restore: 0, background: 0 };

  /** Restore threads no task is using now (the capacity a large restore may borrow). */
  idleThreads(): number {
    return Math.max(0, this.#maxThreads - this.#busy.restore);
  }

  #crashes = 0;
  #crashWorker = '';

  /** Test hook (src/internal/testing.ts): the next `n` tasks run on `crashWorker`, whose thread dies. */
  injectCrashes(n: number, crashWorker: string): void {
    this.#crashes = n;
    this.#crashWorker = crashWorker;
  }

  /** Tasks running per pool (at most maxThreads: beyond that they wait here, not in Piscina). */
  readonly #running: Record<TaskKind, number> = { restore: 0, background: 0 };
  /** Tasks waiting for a worker of their pool, in order. */
  readonly #waiting: Record<TaskKind, (() => void)[]> = { restore: [], background: [] };

  /**
   * Runs a task when a worker of its pool is free. `task` may be a function building the task
   * per attempt (for inputs that are transferred). Decodes are restores, on their own pool: a get
   * never waits behind the demotions that other sessions' promotions caused.
   */
  async #run<T>(task: object | (() => { task: object; transfer: ArrayBuffer[] }), kind: TaskKind): Promise<T> {
    this.#busy[kind]++;
    try {
      if (this.#running[kind] < this.#maxThreads) this.#running[kind]++;
      else await new Promise<void>((resolve) => this.#waiting[kind].push(resolve));
      try {
        return await this.#attempt<T>(task, kind);
      } finally {
        // The worker goes to the next waiting task of its pool, or becomes free.
        const next = this.#waiting[kind].shift();
        if (next) next();
        else this.#running[kind]--;
      }
    } finally {
      this.#busy[kind]--;
    }
  }

  async #attempt<T>(task: object | (() => { task: object; transfer: ArrayBuffer[] }), kind: TaskKind): Promise<T> {
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
        reply = (await this.#pools[kind].run(t, options)) as WorkerReply;
      } catch (err) {
        if (attempt >= 1) throw new KvtcError('E_INTERNAL', `codec worker failed twice: ${(err as Error).message}`, { cause: err });
      }
    }
    if (!reply.ok) throw new KvtcError(reply.code as KvtcErrorCode, reply.message);
    return reply.value as T;
  }

  /**
   * Encodes segments of a cache (none given: the whole cache) into the host arena, one after the
   * other on one background worker (the cache's arrays are shared, not copied); a segment with
   * `contentKey` is keyed by content and skipped when the key is known. One result per segment.
   */
  encode(cache: WireCache, format: BlobFormat, segments: EncodeSegment[] = [{}]): Promise<EncodeResult[]> {
    return this.#run({ op: 'encode', profile: this.#profile, cache, format, segments }, 'background');
  }

  /** Threads per pool. */
  get maxThreads(): number {
    return this.#maxThreads;
  }

  /**
   * Decodes host-arena blobs, or blobs read from disk (read by a loader, transferred), into their
   * places in a shared output, one after the other on one restore worker.
   */
  decodeParts(parts: readonly { source: number | (() => Uint8Array); offset: number; expectTokens: number }[], format: BlobFormat, into: Omit<OutputSlice, 'offset'>, threads = 1): Promise<DecodeResult> {
    return this.#run(() => {
      const transfer: ArrayBuffer[] = [];
      const wire = parts.map((p) => {
        if (typeof p.source === 'number') return { source: { handle: p.source }, offset: p.offset, expectTokens: p.expectTokens };
        const blob = p.source();
        // A blob in shared memory (disk reads, disk-tier.ts) is shared with the worker as it is.
        if (blob.buffer instanceof SharedArrayBuffer) return { source: { blob }, offset: p.offset, expectTokens: p.expectTokens };
        const b = ownBuffer(blob);
        transfer.push(b.buffer as ArrayBuffer);
        return { source: { blob: b }, offset: p.offset, expectTokens: p.expectTokens };
      });
      return { task: { op: 'decode', profile: this.#profile, format, parts: wire, into, threads }, transfer };
    }, 'restore');
  }

  async destroy(): Promise<void> {
    await Promise.all([this.#pools.restore.destroy(), this.#pools.background.destroy()]);
  }
}
