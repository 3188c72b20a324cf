/** Shared setup for store tests: a small model layout, its profile, temp directories. */
import { mkdtemp, rm } from 'node:fs/promises';
import { afterEach } from 'vitest';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { calibrate, decode, encode, type CodecProfile, type KvCache, type KvLayout } from '../../src/index.js';
import { tokenBitsEqual } from './metrics.js';
import { syntheticCache } from './synthetic.js';

export const LAYOUT: KvLayout = { layers: 2, kvHeads: 2, headDim: 16, dtype: 'f32', rope: { theta: 10000, style: 'neox' } };

let profile: Promise<CodecProfile> | undefined;

/** One profile per test file (calibrated on synthetic caches of LAYOUT). */
export function testProfile(): Promise<CodecProfile> {
  profile ??= calibrate(
    Array.from({ length: 3 }, (_, i) => syntheticCache({ layout: LAYOUT, tokens: 300, seed: 1000 + i })),
    { ratio: 8, windowTokens: 8, sinkTokens: 2 },
  );
  return profile;
}

/** A session's cache: `tokens` tokens, distinct data per seed. */
export function session(seed: number, tokens = 64): KvCache {
  return syntheticCache({ layout: LAYOUT, tokens, seed });
}

/** What the codec gives for a cache encoded whole with the test profile: a stored session below the hot tier restores exactly this. */
export async function codecRoundTrip(c: KvCache): Promise<KvCache> {
  const p = await testProfile();
  return decode(await encode(c, p), p);
}

/** Two caches of the same tokens are bit-identical. */
export function sameBits(a: KvCache, b: KvCache): boolean {
  if (a.tokens !== b.tokens) return false;
  for (let t = 0; t < a.tokens; t++) if (!tokenBitsEqual(a, b, t)) return false;
  return true;
}

/** Raw bytes of a session of LAYOUT (f32). */
export function sessionBytes(tokens = 64): number {
  return 2 * LAYOUT.layers * tokens * LAYOUT.kvHeads * LAYOUT.headDim * 4;
}

export async function tempDir(): Promise<{ path: string; cleanup: () => Promise<void> }> {
  const path = await mkdtemp(join(tmpdir(), 'kvtc-store-'));
  return { path, cleanup: () => rm(path, { recursive: true, force: true }) };
}

/**
 * Per-test cleanup for store tests: `defer(fn)` runs fn after the current test (last in, first
 * out); `openStore(options)` opens a store on a fresh temp directory that is closed and removed
 * afterwards. Call once at a test file's top level.
 */
export function storeKit(): {
  defer: (fn: () => Promise<unknown>) => void;
  openStore: (options?: Partial<import('../../src/index.js').StoreOptions>) => Promise<import('../../src/index.js').KvStore>;
} {
  const cleanups: (() => Promise<unknown>)[] = [];
  afterEach(async () => {
    while (cleanups.length) await cleanups.pop()!().catch(() => undefined);
  });
  const defer = (fn: () => Promise<unknown>) => {
    cleanups.push(fn);
  };
  const openStore = async (options: Partial<import('../../src/index.js').StoreOptions> = {}) => {
    const { KvStore } = await import('../../src/index.js');
    const t = await tempDir();
    defer(t.cleanup);
    const store = await KvStore.open({ profile: await testProfile(), path: t.path, ...options });
    defer(() => store.close());
    return store;
  };
  return { defer, openStore };
}
