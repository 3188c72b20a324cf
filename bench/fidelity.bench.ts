/**
 * Fidelity benchmark on a real model: stories260K restored from each method's reconstruction,
 * teacher-forced over the next 32 tokens against the uncompressed run — next-token KL and top-1
 * agreement — plus relative MSE of K and V and the compression ratio, for kvtc at ratios 4, 8,
 * 16, 32 and for the codec benchmark's baselines, on prompts not used for calibration.
 * Writes bench/results/fidelity.json.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { calibrate, decode, encode, type KvCache } from '../src/index.js';
import { fromFloat32 } from '../src/half.js';
import { collectStates } from '../src/adapters/llama-cpp/collect.js';
import { type FidelityProbe, makeProbe, probeFidelity } from '../src/adapters/llama-cpp/fidelity.js';
import { fp8, int4PerHead, int8PerHead, kivi, type BaselineResult } from './baselines.js';
import { relMse } from '../test/helpers/metrics.js';
import { disposeModel, loadPrompts, sharedModel } from '../test/helpers/real-kv.js';

const quick = process.argv.includes('--quick');
const PREFIX = 256;
const STEPS = 32;
const WINDOW = 16;

const { model } = await sharedModel();
const prompts = loadPrompts();
const train = await collectStates(model, { prompts: prompts.slice(0, 24), tokens: 256 });
const testPrompts = prompts.slice(24, quick ? 30 : 48);
console.log(`fidelity: ${testPrompts.length} test prompts, prefix ${PREFIX} tokens, ${STEPS} teacher-forced steps, f16 cache`);
const probes: FidelityProbe[] = [];
for (const p of testPrompts) probes.push(await makeProbe(model, p, PREFIX, STEPS));

type Row = { method: string; ratio: number; relMseK: number; relMseV: number; meanKl: number; top1: number };
const rows: Row[] = [];

async function measure(method: string, reconstruct: (c: KvCache) => Promise<{ cache: KvCache; bytes: number }>): Promise<void> {
  let bytes = 0;
  let raw = 0;
  const acc = { k: 0, v: 0, kl: 0, top1: 0 };
  for (const probe of probes) {
    const c = probe.state.cache;
    const r = await reconstruct(c);
    bytes += r.bytes;
    raw += 2 * c.layout.layers * c.tokens * c.layout.kvHeads * c.layout.headDim * 2;
    acc.k += relMse(c, r.cache, 'keys') / probes.length;
    acc.v += relMse(c, r.cache, 'values') / probes.length;
    const f = await probeFidelity(model, probe, r.cache);
    acc.kl += f.meanKl / probes.length;
    acc.top1 += f.top1Agreement / probes.length;
  }
  rows.push({ method, ratio: raw / bytes, relMseK: acc.k, relMseV: acc.v, meanKl: acc.kl, top1: acc.top1 });
  console.log(`  ${method.padEnd(22)} ratio ${(raw / bytes).toFixed(2).padStart(6)}  KL ${acc.kl.toExponential(2)}  top-1 ${(100 * acc.top1).toFixed(1)}%`);
}

for (const ratio of [4, 8, 16, 32]) {
  const profile = await calibrate(
    train.map((s) => s.cache),
    { ratio, windowTokens: WINDOW },
  );
  await measure(`kvtc ${ratio}x`, async (c) => {
    const blob = await encode(c, profile);
    return { cache: await decode(blob, profile), bytes: blob.length };
  });
}

/** Baselines reconstruct in f32; the model's cache is f16, so round back before loading. */
function asF16(r: BaselineResult): KvCache {
  const rec = r.reconstructed!;
  return {
    ...rec,
    layout: { ...rec.layout, dtype: 'f16' },
    keys: rec.keys.map((k) => fromFloat32(k as Float32Array, 'f16')),
    values: rec.values.map((v) => fromFloat32(v as Float32Array, 'f16')),
  };
}

for (const [name, fn] of [
  ['FP8 E4M3', fp8],
  ['int8 per head', int8PerHead],
  ['int4 per head', int4PerHead],
  ['KIVI 4-bit', kivi(4)],
  ['KIVI 2-bit', kivi(2)],
] as const) {
  await measure(name, async (c) => {
    const r = fn(c);
    return { cache: asF16(r), bytes: r.bytes };
  });
}
await disposeModel();

console.log(`\n| method | ratio vs fp16 | relMSE K | relMSE V | next-token KL (nats) | top-1 agreement |`);
console.log('|---|---|---|---|---|---|');
for (const r of rows) {
  console.log(`| ${r.method} | ${r.ratio.toFixed(2)} | ${r.relMseK.toExponential(2)} | ${r.relMseV.toExponential(2)} | ${r.meanKl.toExponential(2)} | ${(100 * r.top1).toFixed(1)}% |`);
}
mkdirSync(new URL('./results/', import.meta.url), { recursive: true });
writeFileSync(
  new URL('./results/fidelity.json', import.meta.url),
  JSON.stringify({ date: new Date().toISOString(), quick, prefix: PREFIX, steps: STEPS, window: WINDOW, prompts: testPrompts.length, rows }, null, 2),
);
console.log('\nwrote bench/results/fidelity.json');
