/**
 * Profile format versions: a version-1 profile (the per-stream plan, before the whole-cache
 * allocation's record) still loads, reports the per-stream plan with weight 1, and codes exactly
 * as the current profile it was rewritten from; widths beyond 2/4/8 round-trip in both. A
 * version-2 profile (static groups without reconstruction levels, their code bytes in one
 * context) made by the version-2 build decodes its blob to exactly the bytes that build decoded;
 * version-3 levels round-trip and are validated.
 */
import '../helpers/f32-decode.js'; // first: this file compares against the FP32 decoder's exact results
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { buildInfo, calibrate, CodecProfile, decode, encode, type KvLayout } from '../../src/index.js';
import { native } from '../../src/binding.js';
import { syntheticCache } from '../helpers/synthetic.js';
import { profileToVersion1 } from '../helpers/profile-v1.js';

const layout: KvLayout = { layers: 2, kvHeads: 2, headDim: 16, dtype: 'f32', rope: { theta: 10000, style: 'neox', dims: 8 } };
const samples = [1, 2, 3].map((seed) => syntheticCache({ layout, tokens: 300, seed }));

describe('profile versions', () => {
  it('a version-1 profile loads and decodes as its current-version original', async () => {
    const v2 = await calibrate(samples, { ratio: 6, windowTokens: 8, allocation: 'stream', widths: [1, 3, 5, 6] });
    const bytes1 = profileToVersion1(v2.toBytes());
    expect(new DataView(bytes1.buffer).getUint32(4, true)).toBe(1);
    const planGroups = v2.groups.reduce((s, g) => s + g.plan.length, 0);
    expect(bytes1.length).toBe(v2.toBytes().length - 16 - 16 * v2.groups.length - 16 * planGroups);
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

  it('a whole-cache profile round-trips through its bytes; an unknown version is E_PROFILE', async () => {
    const p = await calibrate(samples, { ratio: 6, windowTokens: 8 });
    const again = CodecProfile.fromBytes(p.toBytes());
    expect(again.settings).toEqual(p.settings);
    expect(again.groups.map((g) => [g.weight, g.plannedBits])).toEqual(p.groups.map((g) => [g.weight, g.plannedBits]));
    expect(p.groups.every((g) => g.weight > 0 && g.plannedBits > 0)).toBe(true);
    const bad = p.toBytes();
    new DataView(bad.buffer).setUint32(4, 4, true);
    new DataView(bad.buffer).setUint32(bad.length - 4, native.crc32c(bad.subarray(0, bad.length - 4)), true);
    expect(() => CodecProfile.fromBytes(bad)).toThrow(/unsupported profile version 4/);
  });

  const fixture = (name: string) => new Uint8Array(readFileSync(new URL(`../fixtures/profile-v2/${name}`, import.meta.url)));

  it('a version-2 profile with static groups decodes its blob to exactly the bytes the version-2 build did', async () => {
    const bytes = fixture('profile.kvtp');
    expect(new DataView(bytes.buffer).getUint32(4, true)).toBe(2);
    const v2 = CodecProfile.fromBytes(bytes);
    const statics = v2.groups.flatMap((g) => g.plan.filter((p) => p.quantizer === 'static'));
    expect(statics.filter((p) => p.bits <= 4).length).toBeGreaterThan(4);
    expect(statics.every((p) => p.levels === undefined)).toBe(true);
    const out = await decode(fixture('blob.kvtc'), v2);
    const h = createHash('sha256');
    for (const a of [...out.keys, ...out.values]) h.update(new Uint8Array(a.buffer, a.byteOffset, a.byteLength));
    const expected = JSON.parse(new TextDecoder().decode(fixture('decode-sha256.json'))) as Record<string, string>;
    const path = buildInfo().codecGemm;
    expect(Object.keys(expected)).toContain(path);
    expect(h.digest('hex')).toBe(expected[path]);
  });

  it('version-3 static groups of <= 4 bits carry levels that round-trip; a level count that does not fit its group is E_PROFILE', async () => {
    // Caches nearer to Gaussian than the default synthetic ones: the plan takes narrow static groups.
    const rich = [1, 2, 3].map((seed) => syntheticCache({ layout, tokens: 300, seed, rank: 24, noise: 0.3 }));
    const p = await calibrate(rich, { ratio: 8, windowTokens: 8 });
    const withLevels = p.groups.flatMap((g) => g.plan.filter((q) => q.levels !== undefined));
    expect(withLevels.length).toBeGreaterThan(0);
    const bytes = p.toBytes();
    expect(new DataView(bytes.buffer).getUint32(4, true)).toBe(3);
    const again = CodecProfile.fromBytes(bytes);
    expect(again.groups.map((g) => g.plan)).toEqual(p.groups.map((g) => g.plan));
    for (const g of p.groups)
      for (const q of g.plan) {
        if (q.quantizer === 'static' && q.bits <= 4) expect(q.levels?.length).toBe(q.size << q.bits);
        else expect(q.levels).toBeUndefined();
      }
    // The first plan group with levels: find its level count (size << bits) right after its scale.
    const q = withLevels[0]!;
    const dv = new DataView(bytes.buffer);
    let at = -1;
    for (let o = 0; o + 28 <= bytes.length; o += 4)
      if (dv.getUint32(o, true) === q.start && dv.getUint32(o + 4, true) === q.size && dv.getUint32(o + 8, true) === q.bits &&
          dv.getUint32(o + 12, true) === 1 && dv.getFloat32(o + 20, true) === Math.fround(q.scale!) &&
          dv.getUint32(o + 24, true) === q.size << q.bits) {
        at = o + 24;
        break;
      }
    expect(at).toBeGreaterThan(0);
    const bad = bytes.slice();
    new DataView(bad.buffer).setUint32(at, (q.size << q.bits) - 1, true);
    new DataView(bad.buffer).setUint32(bad.length - 4, native.crc32c(bad.subarray(0, bad.length - 4)), true);
    expect(() => CodecProfile.fromBytes(bad)).toThrow(/reconstruction levels/);
    const nan = bytes.slice();
    new DataView(nan.buffer).setFloat32(at + 4, Number.NaN, true);
    new DataView(nan.buffer).setUint32(nan.length - 4, native.crc32c(nan.subarray(0, nan.length - 4)), true);
    expect(() => CodecProfile.fromBytes(nan)).toThrow(/not finite/);
  });
});
