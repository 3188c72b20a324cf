/**
 * Profile format versions: a version-1 profile (the per-stream plan, before the whole-cache
 * allocation's record) still loads, reports the per-stream plan with weight 1, and codes exactly
 * as the version-2 profile it was rewritten from; widths beyond 2/4/8 round-trip in both.
 */
import { describe, expect, it } from 'vitest';
import { calibrate, CodecProfile, decode, encode, type KvLayout } from '../../src/index.js';
import { native } from '../../src/binding.js';
import { syntheticCache } from '../helpers/synthetic.js';
import { profileToVersion1 } from '../helpers/profile-v1.js';

const layout: KvLayout = { layers: 2, kvHeads: 2, headDim: 16, dtype: 'f32', rope: { theta: 10000, style: 'neox', dims: 8 } };
const samples = [1, 2, 3].map((seed) => syntheticCache({ layout, tokens: 300, seed }));

describe('profile versions', () => {
  it('a version-1 profile loads and decodes as its version-2 original', async () => {
    const v2 = await calibrate(samples, { ratio: 6, windowTokens: 8, allocation: 'stream', widths: [1, 3, 5, 6] });
    const bytes1 = profileToVersion1(v2.toBytes());
    expect(new DataView(bytes1.buffer).getUint32(4, true)).toBe(1);
    const planGroups = v2.groups.reduce((s, g) => s + g.plan.length, 0);
    expect(bytes1.length).toBe(v2.toBytes().length - 16 - 16 * v2.groups.length - 12 * planGroups);
    const v1 = CodecProfile.fromBytes(bytes1);
    expect(v1.settings.allocation).toBe('stream');
    expect(v1.settings.targetTokens).toBe(0);
    expect(v1.settings.expectedRatio).toBe(0);
    v1.groups.forEach((g, i) => {
      const o = v2.groups[i]!;
      expect(g.plan).toEqual(o.plan);
      expect(g.weight).toBe(1);
      expect(g.plannedBits).toBe(g.bitsPerToken); // version 1: the packed cost
      expect(g.predictedError).toBe(o.predictedError);
    });
    const widths = new Set(v2.groups.flatMap((g) => g.plan.map((p) => p.bits)));
    expect([...widths].some((b) => b === 1 || b === 3 || b === 5 || b === 6)).toBe(true);
    const cache = syntheticCache({ layout, tokens: 200, seed: 9, positionStart: 40 });
    const a = await decode(await encode(cache, v1), v1);
    const b = await decode(await encode(cache, v2), v2);
    for (let l = 0; l < layout.layers; l++) {
      expect(a.keys[l]).toEqual(b.keys[l]);
      expect(a.values[l]).toEqual(b.values[l]);
    }
  });

  it('a version-2 whole-cache profile round-trips through its bytes; an unknown version is E_PROFILE', async () => {
    const p = await calibrate(samples, { ratio: 6, windowTokens: 8 });
    const again = CodecProfile.fromBytes(p.toBytes());
    expect(again.settings).toEqual(p.settings);
    expect(again.groups.map((g) => [g.weight, g.plannedBits])).toEqual(p.groups.map((g) => [g.weight, g.plannedBits]));
    expect(p.groups.every((g) => g.weight > 0 && g.plannedBits > 0)).toBe(true);
    const bad = p.toBytes();
    new DataView(bad.buffer).setUint32(4, 3, true);
    new DataView(bad.buffer).setUint32(bad.length - 4, native.crc32c(bad.subarray(0, bad.length - 4)), true);
    expect(() => CodecProfile.fromBytes(bad)).toThrow(/unsupported profile version 3/);
  });
});
