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
