/** A codec worker that dies mid-restore: the get is retried or fails clearly, the session stays intact. */
import { describe, expect, it } from 'vitest';
import { injectWorkerCrashes } from '../../src/internal/testing.js';
import { relMse } from '../helpers/metrics.js';
import { session, storeKit } from '../helpers/store.js';

const { openStore } = storeKit();
const open = () => openStore({ workers: { minThreads: 1, maxThreads: 2 } });

describe('worker failure', () => {
  it('one worker death during a restore is retried on a fresh worker', async () => {
    const store = await open();
    const c = session(1, 150);
    await store.put('a', c);
    await store.evict('a');
    injectWorkerCrashes(store, 1);
    const got = await store.get('a');
    expect(relMse(c, got!, 'keys')).toBeLessThan(0.02);
    expect(store.has('a')).toBe('device');
  });

  it('a restore whose retry dies too fails with a clear error; the session stays intact; the pool recovers', async () => {
    const store = await open();
    const c = session(2, 150);
    await store.put('b', c);
    await store.evict('b', { to: 'disk' });
    injectWorkerCrashes(store, 2);
    await expect(store.get('b')).rejects.toMatchObject({ code: 'E_INTERNAL', message: expect.stringContaining('codec worker failed') });
    expect(store.has('b')).toBe('disk');
    const got = await store.get('b');
    expect(relMse(c, got!, 'values')).toBeLessThan(0.02);
    // Demotions go through the same path: a crash during an encode is retried too.
    injectWorkerCrashes(store, 1);
    await store.put('c', session(3));
    expect(await store.evict('c')).toBe('host');
  });
});
