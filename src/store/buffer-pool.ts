/**
 * Recycled SharedArrayBuffers for the store's own copies of caches (the hot tier's copies of put
 * caches, restore outputs). A fresh buffer costs its zero fill (on the main thread when the
 * allocator reuses heap memory) and a page fault per 4 KiB on the first thread that writes it
 * (~4 ms per 5 MB copy measured on the bench machine, against ~0.3 ms into a buffer written
 * before); shared buffers are also invisible to V8's external-memory accounting, so a store that
 * let them go to the garbage collector would hold dead ones for as long as no GC happens to run.
 *
 * Safety rests on leases: a buffer goes back to the pool only when every holder has released
 * it, and the pool hands out only buffers nobody holds. Whoever reads or writes a pooled buffer
 * outside the operation that owns it (a caller's copy of a hot cache) takes a hold first.
 * A buffer that leaves the store (a restore handed to its caller as it is) is detached: it is
 * never recycled, the garbage collector frees it.
 */
import { KvtcError } from '../errors.js';

/** A pooled buffer and who holds it. */
export class Lease {
  readonly buffer: SharedArrayBuffer;
  #holds = 1;
  #detached = false;
  readonly #pool: BufferPool;

  /** @internal Made by BufferPool.acquire, held once (by the acquirer). */
  constructor(pool: BufferPool, buffer: SharedArrayBuffer) {
    this.#pool = pool;
    this.buffer = buffer;
  }

  /** Holders now (0: back in the pool, or detached and let go). */
  get holds(): number {
    return this.#holds;
  }

  /** One more holder; returns its release (idempotent: a second call does nothing). */
  hold(): () => void {
    if (this.#holds <= 0) throw new KvtcError('E_INTERNAL', 'a released pooled buffer was held again');
    this.#holds++;
    let done = false;
    return () => {
      if (done) return;
      done = true;
      this.release();
    };
  }

  /** Gives up one hold; the last one returns the buffer to the pool (unless detached). */
  release(): void {
    if (this.#holds <= 0) throw new KvtcError('E_INTERNAL', 'a pooled buffer was released more often than it was held');
    if (--this.#holds === 0 && !this.#detached) this.#pool.recycle(this);
  }

  /** The buffer leaves the store (its caller keeps it): never recycled. Releases this hold. */
  detach(): void {
    this.#detached = true;
    this.release();
  }
}

export interface BufferPoolOptions {
  /** Most bytes of idle buffers kept for reuse; beyond that released buffers go to the GC. */
  maxIdleBytes: number;
  /** Test hook: fill every buffer with 0xFF (NaN in every dtype) when it comes back to the pool. */
  poison?: boolean;
}

/**
 * Size classes of 1/8 of a power of two (a new buffer is at most 12.5% larger than asked for), so
 * a session that grows a little still fits the buffer its previous version used.
 */
export function sizeClass(bytes: number): number {
  if (bytes <= 4096) return 4096;
  const step = 2 ** (Math.floor(Math.log2(bytes)) - 3);
  return Math.ceil(bytes / step) * step;
}

/**
 * Bytes of idle cache buffers the store keeps for reuse: half the device budget, at least 64 MiB,
 * at most 1 GiB. What a store needs idle is the buffers its turns in flight release and take again
 * (a put's copy, a restore's output: a few per concurrent caller), which a small device budget
 * does not bound. A buffer let go is no cheaper: a SharedArrayBuffer is invisible to V8's
 * external-memory accounting, so it stays allocated until some GC happens to run, and its
 * replacement is a fresh one, paid in page faults. Measured in the store bench's multi-turn
 * workload (24 MB device budget, 3-11 MB sessions, 60 turns/s into callers' caches): buffers reused
 * 33-35% -> 81-83%, CPU per turn 12.4 -> 10.5 ms.
 */
export function idleBufferBudget(deviceBytes: number): number {
  return Math.min(Math.max(deviceBytes / 2, 64 * 2 ** 20), 2 ** 30);
}

/** A reused buffer is at most this much larger than the request (memory the hot tier's byte count does not see). */
export const MAX_SLACK = 1.5;

export class BufferPool {
  /** Idle buffers, smallest first. */
  readonly #idle: SharedArrayBuffer[] = [];
  #idleBytes = 0;
  readonly #maxIdleBytes: number;
  /** Test hook: fill every buffer with 0xFF (NaN in every dtype) when it comes back to the pool. */
  poison: boolean;
  /** Buffers handed out: reused from the pool, and newly allocated (tests, benches). */
  readonly counts = { reused: 0, allocated: 0, recycled: 0, dropped: 0 };

  constructor(o: BufferPoolOptions) {
    this.#maxIdleBytes = o.maxIdleBytes;
    this.poison = o.poison ?? false;
  }

  /** Bytes of idle buffers held for reuse. */
  get idleBytes(): number {
    return this.#idleBytes;
  }

  /**
   * A buffer of at least `bytes` (at most MAX_SLACK times that, or its size class) that nobody
   * holds, held once by the caller. Its contents are
   * unspecified (a reused buffer holds what its previous holder wrote): every byte that will be
   * read must be written first. E_CAPACITY when memory is exhausted.
   */
  acquire(bytes: number): Lease {
    const size = sizeClass(bytes);
    // The smallest idle buffer that fits, unless it is too much larger than asked for.
    const at = this.#firstAtLeast(bytes);
    const fit = this.#idle[at];
    if (fit !== undefined && fit.byteLength <= Math.max(size, bytes * MAX_SLACK)) {
      this.#idle.splice(at, 1);
      this.#idleBytes -= fit.byteLength;
      this.counts.reused++;
      return new Lease(this, fit);
    }
    try {
      const buf = new SharedArrayBuffer(size);
      this.counts.allocated++;
      return new Lease(this, buf);
    } catch (err) {
      throw new KvtcError('E_CAPACITY', `cannot allocate ${size} bytes for a copy of a cache`, { cause: err });
    }
  }

  /** @internal Lease.release: the buffer nobody holds any more, kept if the idle budget allows. */
  recycle(lease: Lease): void {
    const size = lease.buffer.byteLength;
    if (size > this.#maxIdleBytes) {
      this.counts.dropped++;
      return;
    }
    // Room is made by letting the largest idle buffers go: the newest release is the likeliest fit.
    while (this.#idleBytes + size > this.#maxIdleBytes) {
      this.#idleBytes -= this.#idle.pop()!.byteLength;
      this.counts.dropped++;
    }
    if (this.poison) new Uint8Array(lease.buffer).fill(0xff);
    this.#idle.splice(this.#firstAtLeast(size), 0, lease.buffer);
    this.#idleBytes += size;
    this.counts.recycled++;
  }

  /** Index of the first idle buffer of at least `bytes` (binary search; #idle is sorted by size). */
  #firstAtLeast(bytes: number): number {
    let lo = 0;
    let hi = this.#idle.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (this.#idle[mid]!.byteLength < bytes) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }

  /** Lets every idle buffer go (close). */
  clear(): void {
    this.#idle.length = 0;
    this.#idleBytes = 0;
  }
}
