/** The store's recycled cache buffers: a buffer is handed out again only once nobody holds it. */
import { describe, expect, it } from 'vitest';
import { BufferPool, sizeClass } from '../../src/store/buffer-pool.js';
import { mulberry32 } from '../helpers/synthetic.js';

describe('BufferPool', () => {
  it('size classes are at most 12.5% above the request and monotone', () => {
    let prev = 0;
    for (let n = 1; n < 5e7; n = Math.ceil(n * 1.07) + 1) {
      const c = sizeClass(n);
      expect(c).toBeGreaterThanOrEqual(n);
      expect(c).toBeGreaterThanOrEqual(prev);
      if (n > 4096) expect(c / n).toBeLessThanOrEqual(1.125);
      prev = c;
    }
  });

  it('hands out the smallest idle buffer that fits, never one far larger than asked for', () => {
    const pool = new BufferPool({ maxIdleBytes: 1 << 26 });
    const [a, b, c] = [300_000, 1_000_000, 4_000_000].map((n) => pool.acquire(n));
    for (const l of [c!, a!, b!]) l.release();
    expect(pool.acquire(900_000).buffer).toBe(b!.buffer);
    expect(pool.acquire(1_000_000).buffer).not.toBe(c!.buffer); // 4x the request: a new buffer
    expect(pool.acquire(3_000_000).buffer).toBe(c!.buffer);
    expect(pool.acquire(250_000).buffer).toBe(a!.buffer);
  });

  it('reuses a released buffer, never a held one', () => {
    const pool = new BufferPool({ maxIdleBytes: 1 << 24 });
    const a = pool.acquire(100_000);
    const release = a.hold(); // a second holder (a caller's copy)
    a.release(); // the owner lets go: still held
    const b = pool.acquire(100_000);
    expect(b.buffer).not.toBe(a.buffer);
    release();
    release(); // idempotent
    expect(a.holds).toBe(0);
    const c = pool.acquire(100_000);
    expect(c.buffer).toBe(a.buffer);
    expect(pool.counts).toMatchObject({ reused: 1, allocated: 2, recycled: 1 });
  });

  it('a release without a hold, or a hold after the last release, is an E_INTERNAL bug report', () => {
    const pool = new BufferPool({ maxIdleBytes: 1 << 24 });
    const a = pool.acquire(10_000);
    a.release();
    expect(() => a.release()).toThrow(expect.objectContaining({ code: 'E_INTERNAL' }));
    expect(() => a.hold()).toThrow(expect.objectContaining({ code: 'E_INTERNAL' }));
  });

  it('a detached buffer (handed to a caller) is never handed out again', () => {
    const pool = new BufferPool({ maxIdleBytes: 1 << 24 });
    const a = pool.acquire(10_000);
    a.detach();
    for (let i = 0; i < 4; i++) expect(pool.acquire(10_000).buffer).not.toBe(a.buffer);
    expect(pool.counts.recycled).toBe(0);
  });

  it('keeps idle buffers within its budget and poisons what comes back (test mode)', () => {
    const pool = new BufferPool({ maxIdleBytes: 3 * sizeClass(50_000), poison: true });
    const leases = Array.from({ length: 5 }, () => pool.acquire(50_000));
    new Uint8Array(leases[0]!.buffer).fill(7);
    for (const l of leases) l.release();
    expect(pool.idleBytes).toBe(3 * sizeClass(50_000));
    expect(pool.counts).toMatchObject({ recycled: 5, dropped: 2 });
    expect(new Uint8Array(leases[0]!.buffer).every((b) => b === 0xff)).toBe(true);
    pool.clear();
    expect(pool.idleBytes).toBe(0);
  });

  it('random holds and releases: no buffer is ever held by two owners at once', () => {
    const rand = mulberry32(3);
    const pool = new BufferPool({ maxIdleBytes: 1 << 22 });
    /** Buffers in use and the holds each has, as the model counts them. */
    const live = new Map<SharedArrayBuffer, { lease: ReturnType<BufferPool['acquire']>; releases: (() => void)[] }>();
    for (let step = 0; step < 5000; step++) {
      const r = rand();
      if (r < 0.4 || live.size === 0) {
        const lease = pool.acquire(1000 + Math.floor(rand() * 200_000));
        expect(live.has(lease.buffer)).toBe(false); // handed out while someone holds it
        live.set(lease.buffer, { lease, releases: [() => lease.release()] });
      } else {
        const entries = [...live.values()];
        const e = entries[Math.floor(rand() * entries.length)]!;
        if (r < 0.6) e.releases.push(e.lease.hold());
        else {
          e.releases.splice(Math.floor(rand() * e.releases.length), 1)[0]!();
          expect(e.lease.holds).toBe(e.releases.length);
          if (e.releases.length === 0) live.delete(e.lease.buffer);
        }
      }
    }
  });
});
