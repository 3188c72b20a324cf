import { beforeAll, describe, expect, it } from 'vitest';
import { calibrate, decode, encode, inspect, type CodecProfile, type DType, type KvCache, type KvLayout, type RopeSpec } from '../../src/index.js';
import { native } from '../../src/binding.js';
import { ropeFreqs } from '../../src/layout.js';
import { applyRope, mulberry32, syntheticCache, withDtype } from '../helpers/synthetic.js';
import { relMse, tokenBitsEqual } from '../helpers/metrics.js';

const base: KvLayout = { layers: 3, kvHeads: 2, headDim: 32, dtype: 'f32', rope: { theta: 10000, style: 'interleaved' } };

function samples(layout: KvLayout, n = 4, tokens = 500): KvCache[] {
  return Array.from({ length: n }, (_, i) => syntheticCache({ layout, tokens, seed: 100 + i }));
}

describe('round trips', () => {
  const ropes: [string, RopeSpec | undefined][] = [
    ['interleaved', { theta: 10000, style: 'interleaved' }],
    ['neox', { theta: 500000, style: 'neox' }],
    ['neox partial', { theta: 10000, style: 'neox', dims: 16 }],
    ['interleaved explicit freqs', { theta: 10000, style: 'interleaved', freqs: Float32Array.from({ length: 16 }, (_, i) => 0.5 / (1 + i) ** 1.5) }],
    ['no rope', undefined],
  ];
  for (const [name, rope] of ropes) {
    it(`${name}: every dtype decodes to its own dtype within tolerance`, async () => {
      const layout: KvLayout = { ...base };
      if (rope) layout.rope = rope;
      else delete layout.rope;
      const profile = await calibrate(samples(layout), { ratio: 8, windowTokens: 32 });
      const test = syntheticCache({ layout, tokens: 400, seed: 7, positionStart: 300 });
      for (const dtype of ['f32', 'f16', 'bf16'] as DType[]) {
        const cache = withDtype(test, dtype);
        const out = await decode(await encode(cache, profile), profile);
        expect(out.layout.dtype).toBe(dtype);
        expect(out.tokens).toBe(cache.tokens);
        expect(Array.from(out.positions!)).toEqual(Array.from(cache.positions!));
        expect(out.keys[0]).toBeInstanceOf(dtype === 'f32' ? Float32Array : Uint16Array);
        const k = relMse(cache, out, 'keys');
        const v = relMse(cache, out, 'values');
        expect(k).toBeLessThan(0.01);
        expect(v).toBeLessThan(0.01);
      }
    });
  }
});

describe('lossless parts', () => {
  let profile: CodecProfile;
  beforeAll(async () => {
    profile = await calibrate(samples(base), { ratio: 16, sinkTokens: 4, windowTokens: 64 });
  });

  it('sinks and the recent window are bit-exact, the middle is not', async () => {
    for (const dtype of ['f32', 'f16', 'bf16'] as DType[]) {
      const cache = withDtype(syntheticCache({ layout: base, tokens: 300, seed: 9 }), dtype);
      const out = await decode(await encode(cache, profile), profile);
      for (let t = 0; t < 4; t++) expect(tokenBitsEqual(cache, out, t)).toBe(true);
      for (let t = 300 - 64; t < 300; t++) expect(tokenBitsEqual(cache, out, t)).toBe(true);
      let exactMiddle = 0;
      for (let t = 4; t < 300 - 64; t++) if (tokenBitsEqual(cache, out, t)) exactMiddle++;
      expect(exactMiddle).toBeLessThan(5);
    }
  });

  it('caches shorter than sinks + window are stored losslessly and round-trip', async () => {
    for (const tokens of [0, 1, 3, 4, 5, 67, 68]) {
      const cache = syntheticCache({ layout: base, tokens, seed: tokens + 1 });
      const blob = await encode(cache, profile);
      const info = inspect(blob, { verify: true });
      expect(info.tokens).toBe(tokens);
      const out = await decode(blob, profile);
      expect(out.tokens).toBe(tokens);
      for (let t = 0; t < tokens; t++) expect(tokenBitsEqual(cache, out, t)).toBe(true);
    }
  });

  it('explicit, non-contiguous positions round-trip and drive RoPE', async () => {
    const rand = mulberry32(5);
    const positions = new Int32Array(300);
    let p = 1000;
    for (let i = 0; i < 300; i++) positions[i] = p += 1 + Math.floor(rand() * 3);
    const cache = syntheticCache({ layout: base, tokens: 300, seed: 11, positions });
    const blob = await encode(cache, profile);
    expect(inspect(blob).contiguousPositions).toBe(false);
    const out = await decode(blob, profile);
    expect(Array.from(out.positions!)).toEqual(Array.from(positions));
    expect(relMse(cache, out, 'keys')).toBeLessThan(0.02);
    // Decoding with the wrong positions would scramble keys: error must stay position-independent.
    const shifted = syntheticCache({ layout: base, tokens: 300, seed: 11, positionStart: 50000 });
    const outShifted = await decode(await encode(shifted, profile), profile);
    expect(relMse(shifted, outShifted, 'keys')).toBeLessThan(0.02);
  });

  it('entropy off stores the same quantized rows uncoded: same reconstruction, more bytes', async () => {
    const cache = syntheticCache({ layout: base, tokens: 600, seed: 12 });
    const coded = await encode(cache, profile);
    const plain = await encode(cache, profile, { entropy: false });
    expect(plain.length).toBeGreaterThan(coded.length);
    const a = await decode(coded, profile);
    const b = await decode(plain, profile);
    for (let l = 0; l < base.layers; l++) {
      expect(a.keys[l]).toEqual(b.keys[l]);
      expect(a.values[l]).toEqual(b.values[l]);
    }
    const ip = inspect(plain);
    expect(ip.sections.every((s) => s.mode === 'stored')).toBe(true);
    expect(inspect(coded).sections.slice(1).some((s) => s.mode === 'rans')).toBe(true);
  });
});

describe('ratio', () => {
  const layout: KvLayout = { layers: 2, kvHeads: 4, headDim: 64, dtype: 'f16', rope: { theta: 10000, style: 'neox' } };
  const train = samples(layout, 4, 600).map((c) => withDtype(c, 'f16'));
  const test = withDtype(syntheticCache({ layout, tokens: 2000, seed: 77 }), 'f16');
  const errors: number[] = [];

  for (const ratio of [4, 8, 16, 32]) {
    it(`ratio ${ratio}, per-stream plan: plan within 10% of the budget, whole blob >= 0.9x the target`, async () => {
      const profile = await calibrate(train, { ratio, windowTokens: 0, pcaGroupLayers: 'all', allocation: 'stream', widths: [2, 4, 8] });
      expect(profile.settings.allocation).toBe('stream');
      for (const g of profile.groups) {
        const budget = (16 * g.features) / ratio;
        expect(g.bitsPerToken).toBeLessThanOrEqual(budget);
        expect(g.bitsPerToken).toBeGreaterThanOrEqual(0.9 * budget);
      }
      const blob = await encode(test, profile);
      const info = inspect(blob);
      // Pre-entropy bits of the coded sections (the packed rows) per coded token.
      const codedTokens = test.tokens - info.sinkTokens;
      const preEntropyBits = info.sections.slice(1).reduce((s, x) => s + x.rawBytes * 8, 0) / codedTokens;
      const budget = profile.groups.reduce((s, g) => s + (16 * g.features) / ratio, 0);
      expect(preEntropyBits).toBeLessThanOrEqual(budget * 1.1);
      expect(preEntropyBits).toBeGreaterThanOrEqual(budget * 0.9);
      expect(info.ratio).toBeGreaterThanOrEqual(0.9 * ratio);
      const out = await decode(blob, profile);
      errors.push(relMse(test, out, 'keys') + relMse(test, out, 'values'));
    });
  }

  it('error falls as the ratio falls', () => {
    expect(errors).toHaveLength(4);
    for (let i = 1; i < errors.length; i++) expect(errors[i]!).toBeGreaterThan(errors[i - 1]!);
  });

  // The whole-cache allocation aims at the whole blob of a cache of the calibration length:
  // sinks, window, header and chunk tables included.
  const sameLength = withDtype(syntheticCache({ layout, tokens: 600, seed: 78 }), 'f16');
  const globalErrors: number[] = [];
  for (const [ratio, window] of [
    [4, 0],
    [8, 0],
    [8, 64],
    [16, 0],
    [32, 0],
  ] as const) {
    it(`ratio ${ratio}, window ${window}, whole-cache plan: the blob of a calibration-length cache is within 5% of the ratio`, async () => {
      const profile = await calibrate(train, { ratio, windowTokens: window, pcaGroupLayers: 1 });
      expect(profile.settings.allocation).toBe('global');
      expect(profile.settings.targetTokens).toBe(600);
      expect(Math.abs(profile.settings.expectedRatio / ratio - 1)).toBeLessThan(0.05);
      for (const cache of [train[0]!, sameLength]) {
        const info = inspect(await encode(cache, profile));
        expect(Math.abs(info.ratio / ratio - 1), `delivered ${info.ratio}`).toBeLessThan(0.05);
      }
      if (window === 0) {
        const out = await decode(await encode(sameLength, profile), profile);
        globalErrors.push(relMse(sameLength, out, 'keys') + relMse(sameLength, out, 'values'));
      }
    });
  }

  it('whole-cache plan: error falls as the ratio falls', () => {
    expect(globalErrors).toHaveLength(4);
    for (let i = 1; i < globalErrors.length; i++) expect(globalErrors[i]!).toBeGreaterThan(globalErrors[i - 1]!);
  });

  it('a target the raw tokens alone exceed falls back to the per-stream plan and says what to expect', async () => {
    // 600 tokens with a 300-token raw window cannot be 16x smaller than fp16.
    const profile = await calibrate(train, { ratio: 16, windowTokens: 300, pcaGroupLayers: 1 });
    expect(profile.settings.allocation).toBe('stream');
    expect(profile.settings.expectedRatio).toBeLessThan(2.1);
    const info = inspect(await encode(sameLength, profile));
    expect(Math.abs(info.ratio / profile.settings.expectedRatio - 1)).toBeLessThan(0.1);
  });
});

describe('RoPE', () => {
  for (const rope of [
    { theta: 10000, style: 'interleaved' },
    { theta: 1e6, style: 'neox' },
    { theta: 10000, style: 'neox', dims: 12 },
    { theta: 10000, style: 'interleaved', dims: 8 },
  ] as RopeSpec[]) {
    it(`${rope.style} dims ${rope.dims ?? 'all'}: native matches the reference and undo∘redo is the identity`, () => {
      const layout: KvLayout = { layers: 1, kvHeads: 3, headDim: 32, dtype: 'f32', rope };
      const n = 50;
      const rand = mulberry32(3);
      const x = Float32Array.from({ length: n * 3 * 32 }, () => rand() * 8 - 4);
      const positions = Int32Array.from({ length: n }, (_, i) => i * 997);
      const ref = Float32Array.from(x);
      applyRope(ref, layout, positions);
      const y = Float32Array.from(x);
      const style = rope.style === 'interleaved' ? 1 : 2;
      native.internals.rope(y, 3, 32, style, ropeFreqs(rope, 32), positions, false);
      for (let i = 0; i < y.length; i++) expect(Math.abs(y[i]! - ref[i]!)).toBeLessThan(2e-4);
      native.internals.rope(y, 3, 32, style, ropeFreqs(rope, 32), positions, true);
      for (let i = 0; i < y.length; i++) expect(Math.abs(y[i]! - x[i]!)).toBeLessThan(1e-5);
    });
  }
});

describe('wide PCA groups', () => {
  it('the sample-Gram PCA (groups wider than maxFeatures) codes as well as the covariance path', async () => {
    const train = samples(base, 3, 500);
    const test = syntheticCache({ layout: base, tokens: 500, seed: 21 });
    const cov = await calibrate(train, { ratio: 16, pcaGroupLayers: 'all', windowTokens: 16 });
    const gram = await calibrate(train, { ratio: 16, pcaGroupLayers: 'all', windowTokens: 16, maxFeatures: 64 });
    expect(cov.groups[0]!.features).toBe(192);
    const eCov = await decode(await encode(test, cov), cov);
    const eGram = await decode(await encode(test, gram), gram);
    const kc = relMse(test, eCov, 'keys');
    const kg = relMse(test, eGram, 'keys');
    expect(kg).toBeLessThan(kc * 1.5);
    expect(relMse(test, eGram, 'values')).toBeLessThan(relMse(test, eCov, 'values') * 1.5);
    // The leading eigenvalues agree (same data, sample vs full covariance).
    const a = cov.groups[0]!.eigenvalues;
    const b = gram.groups[0]!.eigenvalues;
    for (let i = 0; i < 4; i++) expect(Math.abs(a[i]! - b[i]!) / a[i]!).toBeLessThan(0.1);
  });
});
