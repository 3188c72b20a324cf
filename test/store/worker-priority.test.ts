/**
 * The store's codec threads: restores run at normal priority, background encodes on niced
 * threads, and each worker runs the native codec on its own thread (so those priorities are
 * what the kernel schedules), not on libuv's shared pool.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { afterEach, describe, expect, it } from 'vitest';
import { KvStore, encode, decode, KvtcError } from '../../src/index.js';
import { arenaAddon, native } from '../../src/binding.js';
import { sameBits, session, tempDir, testProfile } from '../helpers/store.js';

const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0)) await c();
});

/** Nice value of every thread of this process (Linux: field 19 of /proc/self/task/<tid>/stat). */
function niceValues(): Map<number, number> {
  const out = new Map<number, number>();
  for (const tid of readdirSync('/proc/self/task')) {
    try {
      const stat = readFileSync(`/proc/self/task/${tid}/stat`, 'utf8');
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      out.set(Number(tid), Number(fields[16]));
    } catch {
      // the thread ended meanwhile
    }
  }
  return out;
}

describe('codec worker threads', () => {
  it.runIf(process.platform === 'linux')('background encodes run on niced threads; restores and the main thread do not', async () => {
    const profile = await testProfile();
    const t = await tempDir();
    const store = await KvStore.open({ profile, path: t.path, workers: { minThreads: 1, maxThreads: 1 } });
    cleanups.push(async () => {
      await store.close();
      await t.cleanup();
    });
    const before = niceValues();
    const base = before.get(Number(readFileSync('/proc/thread-self/stat', 'utf8').split(' ')[0]))!;
    await store.put('a', session(1, 120));
    await store.evict('a'); // an encode on the background pool
    expect(await store.get('a', { promote: false })).toBeDefined(); // a decode on the restore pool
    const nice = [...niceValues().values()];
    expect(nice.filter((n) => n === base + 10).length).toBeGreaterThanOrEqual(1);
    expect(nice.filter((n) => n === base).length).toBeGreaterThanOrEqual(2); // the main thread, a restore worker, ...
  });

  it('inline execution runs the addon work on the calling thread with the same results and error codes', async () => {
    const profile = await testProfile();
    const cache = session(3, 90);
    const queued = await encode(cache, profile);
    native.setInlineExecution(true);
    try {
      const inline = await encode(cache, profile);
      expect(Buffer.compare(Buffer.from(inline), Buffer.from(queued))).toBe(0);
      const back = await decode(inline, profile);
      expect(sameBits(back, await decode(queued, profile))).toBe(true);
      const damaged = new Uint8Array(inline);
      damaged[damaged.length - 5]! ^= 0xff;
      await expect(decode(damaged, profile)).rejects.toSatisfy((e: unknown) => e instanceof KvtcError && e.code === 'E_CORRUPT');
    } finally {
      native.setInlineExecution(false);
    }
  });

  it('a batch of encodes that fails part way frees the blobs it made and says why', async () => {
    const profile = await testProfile();
    const { default: handle } = await import('../../src/workers/worker.js');
    try {
      const cache = session(5, 96);
      const bytes = profile.toBytes();
      const wire = { fingerprint: profile.fingerprint, bytes };
      const before = arenaAddon.arenaStats().blocks;
      const ok = { segment: { start: 0, tokens: 32, sinks: 4, window: 0 } };
      // Tokens 64..160 of a 96-token cache: the slice is short, and the codec refuses it.
      const bad = { segment: { start: 64, tokens: 96, sinks: 0, window: 0 } };
      const reply = await handle({ op: 'encode', profile: wire, cache, format: 'kvtc', segments: [ok, ok, bad] });
      expect(reply.ok).toBe(false);
      expect(reply.ok ? '' : reply.code).toMatch(/^E_/);
      expect(arenaAddon.arenaStats().blocks).toBe(before);
      const good = await handle({ op: 'encode', profile: wire, cache, format: 'kvtc', segments: [ok, ok] });
      expect(good.ok && Array.isArray(good.value) ? good.value.length : 0).toBe(2);
      if (good.ok && Array.isArray(good.value)) for (const r of good.value) arenaAddon.arenaFree(r.handle);
      expect(arenaAddon.arenaStats().blocks).toBe(before);
    } finally {
      native.setInlineExecution(false); // importing the worker module turned it on for this thread
    }
  });
});
