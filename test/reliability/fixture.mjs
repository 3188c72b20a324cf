// Deterministic caches shared by the crash tests' parent (vitest) and child (plain node) processes.
import { mulberry32 } from '../helpers/prng.mjs';

export const LAYOUT = { layers: 2, kvHeads: 2, headDim: 16, dtype: 'f32', rope: { theta: 10000, style: 'neox' } };

/** A cache with a few shared directions plus noise, different for every seed. */
export function fixtureCache(seed, tokens = 96) {
  const rand = mulberry32(seed * 7919 + 1);
  const basis = mulberry32(99);
  const rv = LAYOUT.kvHeads * LAYOUT.headDim;
  const dirs = Array.from({ length: 4 }, () => Float32Array.from({ length: rv }, () => basis() * 2 - 1));
  const make = () =>
    Array.from({ length: LAYOUT.layers }, () => {
      const a = new Float32Array(tokens * rv);
      for (let t = 0; t < tokens; t++) {
        const z = dirs.map(() => rand() * 4 - 2);
        for (let j = 0; j < rv; j++) {
          let v = 0.05 * (rand() - 0.5);
          for (let d = 0; d < dirs.length; d++) v += z[d] * dirs[d][j];
          a[t * rv + j] = v;
        }
      }
      return a;
    });
  return { layout: { ...LAYOUT }, tokens, keys: make(), values: make() };
}

/** Tokens every third session shares with others (a common prompt), for the chunk-sharing crash runs. */
export const SHARED_TOKENS = 48;

/**
 * A session whose first SHARED_TOKENS tokens (data and token ids) are one of three prompts and
 * whose rest is its own: stored with chunks of 16 tokens, its first chunks are shared.
 */
export function sharedFixture(seed) {
  const prompt = fixtureCache(5000 + (seed % 3));
  const own = fixtureCache(seed);
  const rv = LAYOUT.kvHeads * LAYOUT.headDim;
  const join = (a, b) => a.map((x, l) => {
    const out = new Float32Array(b[l]);
    out.set(x.subarray(0, SHARED_TOKENS * rv));
    return out;
  });
  const tokens = Int32Array.from({ length: own.tokens }, (_, i) => (i < SHARED_TOKENS ? 7 * (seed % 3) + i : 1000 + seed * 97 + i));
  return { cache: { ...own, keys: join(prompt.keys, own.keys), values: join(prompt.values, own.values) }, tokens };
}
