/**
 * Disk full: with a small LMDB map, spills that cannot be written leave their sessions in the
 * host tier (with an 'error' event), the store keeps serving, and what is on disk is unharmed.
 */
import { describe, expect, it } from 'vitest';
import type { StoreEvent } from '../../src/index.js';
import { relMse } from '../helpers/metrics.js';
import { session, storeKit } from '../helpers/store.js';

const { openStore } = storeKit();

describe('disk full', () => {
  it('spills that do not fit stay in the host tier; the store serves; disk records stay intact', async () => {
    const store = await openStore({
      tiers: { device: { capacityBytes: 0 }, host: { capacityBytes: 1 }, disk: { mapSizeBytes: 160 * 1024 } },
      flushOnClose: false,
    });
    const errors: StoreEvent[] = [];
    store.on('error', (e) => errors.push(e));
    const caches = Array.from({ length: 40 }, (_, i) => session(100 + i, 200));
    for (const [i, c] of caches.entries()) await store.put(`s${i}`, c);
    const onDisk = caches.map((_, i) => `s${i}`).filter((id) => store.has(id) === 'disk');
    const inHost = caches.map((_, i) => `s${i}`).filter((id) => store.has(id) === 'host');
    console.log(`[disk-full] ${onDisk.length} sessions fit on disk, ${inHost.length} kept in the host tier, ${errors.length} error events`);
    expect(onDisk.length).toBeGreaterThan(0);
    expect(inHost.length).toBeGreaterThan(0);
    expect(onDisk.length + inHost.length).toBe(caches.length); // nothing lost
    expect(errors.length).toBeGreaterThan(0);
    expect(errors[0]!.error?.code).toBe('E_CAPACITY');
    // Every session still restores correctly, from whichever tier holds it.
    for (const [i, c] of caches.entries()) {
      const got = await store.get(`s${i}`, { promote: false });
      expect(relMse(c, got!, 'keys')).toBeLessThan(0.02);
    }
    // New work is still accepted.
    await store.put('after', session(999));
    expect(store.has('after')).toBeDefined();
    expect(store.stats().misses).toBe(0);
  });
});
