/**
 * The CUDA decoder reconstructs static groups at the profile's levels as the CPU one does: a blob
 * decoded on both agrees within float rounding, far closer than to the decode of a profile
 * without levels. Runs on the real GPU when one is usable, else on the CPU emulation (target.ts).
 */
import '../helpers/f32-decode.js'; // first: this file compares against the FP32 decoder's exact results
import { TARGET } from './target.js';
import { describe, expect, it } from 'vitest';
import { calibrate, CodecProfile, decode, encode, type KvCache, type KvLayout } from '../../src/index.js';
import { rewriteLevels } from '../helpers/profile-levels.js';
import { syntheticCache } from '../helpers/synthetic.js';

const layout: KvLayout = { layers: 2, kvHeads: 2, headDim: 16, dtype: 'f32', rope: { theta: 10000, style: 'neox' } };
const rich = (seed: number, tokens: number) => syntheticCache({ layout, tokens, seed, rank: 24, noise: 0.3 });
const flat = (c: KvCache) => Float64Array.from([...c.keys, ...c.values].flatMap((a) => Array.from(a as Float32Array)));
const maxDiff = (a: Float64Array, b: Float64Array) => a.reduce((m, v, i) => Math.max(m, Math.abs(v - b[i]!)), 0);

describe(`static-group levels on the GPU decoder (${TARGET})`, () => {
  it('decode on the GPU matches the CPU with levels, not the decode without them', async () => {
    const profile = await calibrate([1, 2, 3].map((s) => rich(s, 300)), { ratio: 8, windowTokens: 8 });
    expect(profile.groups.some((g) => g.plan.some((q) => q.levels))).toBe(true);
    const none = CodecProfile.fromBytes(rewriteLevels(profile.toBytes(), () => null));
    const cache = rich(9, 200);
    for (const encodeOn of ['cpu', 'cuda'] as const) {
      const blob = await encode(cache, profile, { backend: encodeOn });
      const cpu = flat(await decode(blob, profile, { backend: 'cpu' }));
      const gpu = flat(await decode(blob, profile, { backend: 'cuda' }));
      const uniform = flat(await decode(await encode(cache, none, { backend: 'cpu' }), none, { backend: 'cpu' }));
      const scale = Math.sqrt(cpu.reduce((s, v) => s + v * v, 0) / cpu.length);
      const levelsMove = maxDiff(cpu, uniform);
      expect(levelsMove).toBeGreaterThan(1e-3 * scale);
      expect(maxDiff(cpu, gpu), `encoded on ${encodeOn}`).toBeLessThan(Math.min(1e-4 * scale, 0.01 * levelsMove));
    }
  });
});
