/**
 * The codec on real KV caches: stories260K run by node-llama-cpp, calibrated on half of the
 * shared prompts and tested on the other half.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { calibrate, type CalibrateOptions, decode, encode, inspect, type KvCache } from '../../src/index.js';
import { collectStates } from '../../src/adapters/llama-cpp/collect.js';
import { type FidelityProbe, makeProbe, probeFidelity } from '../../src/adapters/llama-cpp/fidelity.js';
import { int4PerHead, int8PerHead } from '../../bench/baselines.js';
import { disposeModel, loadPrompts, realCaches, sharedModel } from '../helpers/real-kv.js';
import { relMse } from '../helpers/metrics.js';
import { fromFloat32 } from '../../src/half.js';

const TOKENS = 256;
let train: KvCache[];
let test: KvCache[];

beforeAll(async () => {
  const prompts = loadPrompts();
  const half = Math.floor(prompts.length / 2);
  train = await realCaches({ prompts: prompts.slice(0, half), tokens: TOKENS, cacheType: 'f16' });
  test = await realCaches({ prompts: prompts.slice(half, half + 8), tokens: TOKENS, cacheType: 'f16' });
});

afterAll(async () => {
  await disposeModel();
});

describe('real stories260K KV', () => {
  for (const [name, baseline] of [
    ['int8', int8PerHead],
    ['int4', int4PerHead],
  ] as const) {
    it(`at no more bytes than per-head ${name} absmax, kvtc has lower K and V error`, async () => {
      const ref = baseline(test[0]!);
      // No more bytes: calibrate 5% above the baseline's ratio (the whole-blob plan delivers its
      // ratio within 5%) with every token coded but the sinks.
      const profile = await calibrate(train, { ratio: 1.05 * ref.ratio, windowTokens: 0, pcaGroupLayers: 'all' });
      let kvtcBytes = 0;
      let baseBytes = 0;
      let kK = 0;
      let kV = 0;
      let bK = 0;
      let bV = 0;
      for (const cache of test) {
        const blob = await encode(cache, profile);
        const out = await decode(blob, profile);
        kvtcBytes += blob.length;
        kK += relMse(cache, out, 'keys');
        kV += relMse(cache, out, 'values');
        const b = baseline(cache);
        baseBytes += b.bytes;
        bK += b.relMseK;
        bV += b.relMseV;
      }
      console.log(`${name}: kvtc ${kvtcBytes} B relMSE K ${(kK / test.length).toExponential(2)} V ${(kV / test.length).toExponential(2)}; ` +
        `${name} ${baseBytes} B relMSE K ${(bK / test.length).toExponential(2)} V ${(bV / test.length).toExponential(2)}`);
      expect(kvtcBytes).toBeLessThanOrEqual(baseBytes);
      expect(kK).toBeLessThan(bK);
      if (name === 'int4') expect(kV).toBeLessThan(bV);
      else {
        // At int8's bytes (1.7x) the whole-cache plan spends where the model feels it: keys 100x
        // below int8's error, values about as int8 (1.2x its error). What is asserted for both
        // streams together is what the model feels: the next-token KL of the restored cache.
        expect(kV).toBeLessThan(1.5 * bV);
        const { model } = await sharedModel();
        const prompts = loadPrompts();
        const half = Math.floor(prompts.length / 2);
        let klKvtc = 0;
        let klBase = 0;
        for (const p of prompts.slice(half, half + 4)) {
          const probe = await makeProbe(model, p, TOKENS, 16);
          const c = probe.state.cache;
          klKvtc += (await probeFidelity(model, probe, await decode(await encode(c, profile), profile))).meanKl;
          const rec = baseline(c).reconstructed!;
          const asCacheDtype = (a: ArrayBufferView[]) => a.map((x) => fromFloat32(x as Float32Array, c.layout.dtype as 'f16'));
          klBase += (await probeFidelity(model, probe, { ...rec, layout: c.layout, keys: asCacheDtype(rec.keys), values: asCacheDtype(rec.values) })).meanKl;
        }
        console.log(`${name}: next-token KL kvtc ${(klKvtc / 4).toExponential(2)}, ${name} ${(klBase / 4).toExponential(2)}`);
        expect(klKvtc).toBeLessThan(klBase);
      }
    });
  }

  it('at the default ratio 16 the whole blob is within 5% of 16x smaller than fp16 (window 0) and errors stay bounded', async () => {
    const profile = await calibrate(train, { windowTokens: 0 });
    expect(profile.settings.ratio).toBe(16);
    expect(profile.settings.pcaGroupLayers).toBe(5); // 'auto' groups all 5 layers of 32 features
    expect(profile.settings.targetTokens).toBe(TOKENS);
    for (const cache of test.slice(0, 4)) {
      const blob = await encode(cache, profile);
      const info = inspect(blob, { verify: true });
      expect(Math.abs(info.ratio / 16 - 1)).toBeLessThan(0.05);
      const out = await decode(blob, profile);
      // The allocation spends on keys what next-token fidelity needs (see the KL test below).
      expect(relMse(cache, out, 'keys')).toBeLessThan(0.05);
      expect(relMse(cache, out, 'values')).toBeLessThan(0.5);
    }
  });

  it('next-token fidelity: at 8x the whole-cache plan delivers the ratio within 5% at a bounded KL', async () => {
    const { model } = await sharedModel();
    const prompts = loadPrompts();
    const half = Math.floor(prompts.length / 2);
    const probes: FidelityProbe[] = [];
    for (const p of prompts.slice(half, half + 6)) probes.push(await makeProbe(model, p, TOKENS, 16));
    const states = await collectStates(model, { prompts: prompts.slice(0, half), tokens: TOKENS });
    const run = async (opts: CalibrateOptions) => {
      const profile = await calibrate(states.map((s) => s.cache), { ratio: 8, windowTokens: 0, ...opts });
      let kl = 0;
      let ratio = 0;
      for (const probe of probes) {
        const blob = await encode(probe.state.cache, profile);
        ratio += inspect(blob).ratio / probes.length;
        kl += (await probeFidelity(model, probe, await decode(blob, profile))).meanKl / probes.length;
      }
      return { kl, ratio };
    };
    const global = await run({});
    console.log(`8x: whole-cache ratio ${global.ratio.toFixed(2)} KL ${global.kl.toExponential(2)}`);
    expect(Math.abs(global.ratio / 8 - 1)).toBeLessThan(0.05);
    expect(global.kl).toBeLessThan(2e-2);
  });
});
