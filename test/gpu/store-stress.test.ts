/**
 * The store's random-operation stress loop (helpers/stress.ts) on the CUDA backend: hot sessions
 * in device memory, demotions and restores through the GPU codec, several at once. After every
 * batch the device memory in use equals the hot tier's accounting (exactly on the emulation,
 * where allocations are not rounded) and the host arena equals the host tier's; closing the
 * store returns both.
 */
import { REAL_DEVICE, TARGET } from './target.js';
import { expect, it } from 'vitest';
import { deviceMemory, encode } from '../../src/index.js';
import { native } from '../../src/binding.js';
import { session, sessionBytes, storeKit, testProfile } from '../helpers/store.js';
import { runStress } from '../helpers/stress.js';

const { openStore } = storeKit();

it(`400 random operations on the cuda backend keep every invariant (${TARGET})`, async () => {
  const profile = await testProfile();
  const blob = (await encode(session(1), profile, { backend: 'cuda' })).length; // also uploads the profile
  const caps = { device: sessionBytes() * 4, host: blob * 6, disk: blob * 60 };
  const used = async () => {
    const m = await deviceMemory.info();
    return m.total - m.free;
  };
  const deviceBefore = await used();
  const arenaBefore = native.arenaStats().bytes;
  const store = await openStore({
    backend: 'cuda',
    tiers: { device: { capacityBytes: caps.device, idleMs: 0 }, host: { capacityBytes: caps.host, idleMs: 0 }, disk: { capacityBytes: caps.disk } },
    workers: { minThreads: 1, maxThreads: 2 },
  });
  const { done } = await runStress(store, {
    ops: 400,
    ids: 60,
    parallel: 6,
    caps,
    seed: 7,
    check: async () => {
      await store.settled();
      const s = store.stats();
      expect(native.arenaStats().bytes - arenaBefore).toBe(s.host.storedBytes - s.host.overheadBytes);
      if (!REAL_DEVICE) expect((await used()) - deviceBefore).toBe(s.device.rawBytes);
    },
  });
  expect(done).toBeGreaterThanOrEqual(400);
  await store.close();
  expect(native.arenaStats().bytes).toBe(arenaBefore);
  if (!REAL_DEVICE) expect(await used()).toBe(deviceBefore);
});
