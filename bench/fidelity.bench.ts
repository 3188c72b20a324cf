/**
 * Fidelity benchmark on a real model: stories260K restored from each method's reconstruction,
 * teacher-forced over the next 32 tokens against the uncompressed run — next-token KL and top-1
 * agreement — plus relative MSE of K and V and the compression ratio of the whole blob (sinks and
 * headers included), on prompts not used for calibration (calibration: prompts 0–23; test: 24–47).
 *
 * kvtc is run with today's whole-cache plan (one budget over keys and values, attention weights,
 * entropy-coded costs, widths 1–6 and 8) and with the per-stream plan it replaced (equal budgets,
 * widths 2/4/8), at several ratios each, beside the baselines. Then, at the KL of KIVI-4 and of
 * per-head int4, each kvtc curve's ratio is interpolated (log ratio against log KL between the two
 * bracketing points) and compared with the baseline's; and per stream the achieved bits per value
 * are set against the Gaussian rate–distortion bound of the calibration spectrum at the achieved
 * squared error.
 *
 * --quick: 6 test prompts and fewer ratios. --ratios=3,4,5 and --plans=whole-cache (or per-stream)
 * restrict the kvtc rows (iteration) and write their JSON (which names the ratios and plans run)
 * only to --out=PATH; full and --quick runs write bench/results/fidelity.json (or --out).
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { cpus } from 'node:os';
import { dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { calibrate, type CalibrateOptions, type CodecProfile, decode, encode, inspect, type KvCache } from '../src/index.js';
import { fromFloat32, toFloat32 } from '../src/half.js';
import { collectStates } from '../src/adapters/llama-cpp/collect.js';
import { type FidelityProbe, makeProbe, probeFidelity } from '../src/adapters/llama-cpp/fidelity.js';
import { fp8, gaussianRdBound, int4PerHead, int8PerHead, kivi, type BaselineResult } from './baselines.js';
import { relMse } from '../test/helpers/metrics.js';
import { disposeModel, loadPrompts, sharedModel } from '../test/helpers/real-kv.js';

const quick = process.argv.includes('--quick');
const argOf = (name: string) => process.argv.find((a) => a.startsWith(`--${name}=`))?.slice(name.length + 3);
const ratioList = argOf('ratios')?.split(',').map(Number);
const planList = argOf('plans')?.split(',');
const PREFIX = 400;
const STEPS = 32;
const SINKS = 4;
const WINDOW = 0;
const machine = `${cpus()[0]?.model.trim() ?? 'unknown CPU'}, ${cpus().length} cores, no GPU used`;

const { model } = await sharedModel();
const prompts = loadPrompts();
const train = await collectStates(model, { prompts: prompts.slice(0, 24), tokens: PREFIX });
const testPrompts = prompts.slice(24, quick ? 30 : 48);
console.log(`fidelity: ${testPrompts.length} test prompts, prefix ${PREFIX} tokens (${SINKS} sinks, window ${WINDOW}), ${STEPS} teacher-forced steps, f16 cache; ${machine}`);
const probes: FidelityProbe[] = [];
for (const p of testPrompts) probes.push(await makeProbe(model, p, PREFIX, STEPS));

type Row = { method: string; plan?: string; ratio: number; relMseK: number; relMseV: number; meanKl: number; top1: number; weightedError: number };
type BoundRow = { method: string; stream: string; layers: string; bitsPerValue: number; boundBitsPerValue: number; factor: number };
const rows: Row[] = [];
const bounds: BoundRow[] = [];

/** Squared error per coded token of each of the profile's stream groups, in feature space (RoPE is a rotation). */
function groupErrors(profile: CodecProfile, a: KvCache, b: KvCache, coded: number): number[] {
  const rv = a.layout.kvHeads * a.layout.headDim;
  const f32 = (x: ArrayBufferView) => (x instanceof Float32Array ? x : toFloat32(x as Uint16Array, a.layout.dtype as 'f16'));
  return profile.groups.map((g) => {
    let e = 0;
    for (let l = g.layerStart; l < g.layerStart + g.layerCount; l++) {
      const x = f32((g.stream === 'keys' ? a.keys : a.values)[l]!);
      const y = f32((g.stream === 'keys' ? b.keys : b.values)[l]!);
      for (let i = SINKS * rv; i < (a.tokens - WINDOW) * rv; i++) e += (x[i]! - y[i]!) ** 2;
    }
    return e / coded;
  });
}

// The attention weights of a whole-cache profile (calibration's estimate of what the model feels)
// score every method's reconstruction: does the weighted error order the methods as the KL does?
const reference = await calibrate(train.map((s) => s.cache), { ratio: 8, sinkTokens: SINKS, windowTokens: WINDOW });

async function measure(method: string, reconstruct: (c: KvCache) => Promise<{ cache: KvCache; bytes: number }>, plan?: string): Promise<Row> {
  let bytes = 0;
  let raw = 0;
  const acc = { k: 0, v: 0, kl: 0, top1: 0, w: 0 };
  for (const probe of probes) {
    const c = probe.state.cache;
    const r = await reconstruct(c);
    bytes += r.bytes;
    raw += 2 * c.layout.layers * c.tokens * c.layout.kvHeads * c.layout.headDim * 2;
    acc.k += relMse(c, r.cache, 'keys') / probes.length;
    acc.v += relMse(c, r.cache, 'values') / probes.length;
    const coded = c.tokens - SINKS - WINDOW;
    acc.w += groupErrors(reference, c, r.cache, coded).reduce((s, e, i) => s + reference.groups[i]!.weight * e, 0) / probes.length;
    const f = await probeFidelity(model, probe, r.cache);
    acc.kl += f.meanKl / probes.length;
    acc.top1 += f.top1Agreement / probes.length;
  }
  const row: Row = { method, ratio: raw / bytes, relMseK: acc.k, relMseV: acc.v, meanKl: acc.kl, top1: acc.top1, weightedError: acc.w };
  if (plan) row.plan = plan;
  rows.push(row);
  console.log(`  ${method.padEnd(26)} ratio ${(raw / bytes).toFixed(2).padStart(6)}  KL ${acc.kl.toExponential(2)}  top-1 ${(100 * acc.top1).toFixed(1)}%  relMSE K ${acc.k.toExponential(2)} V ${acc.v.toExponential(2)}`);
  return row;
}

async function kvtc(plan: string, label: string, ratio: number, opts: CalibrateOptions): Promise<void> {
  const profile = await calibrate(train.map((s) => s.cache), { ratio, sinkTokens: SINKS, windowTokens: WINDOW, ...opts });
  const name = `kvtc ${label} ${ratio}x`;
  const bits = new Array<number>(profile.groups.length).fill(0);
  const errs = new Array<number>(profile.groups.length).fill(0);
  let coded = 0;
  await measure(name, async (c) => {
    const blob = await encode(c, profile);
    const info = inspect(blob);
    const out = await decode(blob, profile);
    const n = c.tokens - info.sinkTokens - info.windowTokens - info.escapedTokens;
    info.sections.slice(1).forEach((s, i) => (bits[i]! += 8 * s.storedBytes));
    groupErrors(profile, c, out, n).forEach((e, i) => (errs[i]! += e * n));
    coded += n;
    return { cache: out, bytes: blob.length };
  }, plan);
  profile.groups.forEach((g, i) => {
    const bpv = bits[i]! / coded / g.features;
    const bound = gaussianRdBound(g.eigenvalues, errs[i]! / coded).bitsPerComponentTotal / g.features;
    bounds.push({ method: name, stream: g.stream, layers: `${g.layerStart}-${g.layerStart + g.layerCount - 1}`, bitsPerValue: bpv, boundBitsPerValue: bound, factor: bpv / bound });
  });
}

const ratios = ratioList ?? (quick ? [4, 8, 16] : [2, 2.5, 3, 4, 5, 6, 8, 12, 16, 24, 32]);
const runs = (plan: string) => !planList || planList.includes(plan);
if (runs('whole-cache')) for (const ratio of ratios) await kvtc('whole-cache', 'whole-cache', ratio, {});
if (runs('per-stream')) for (const ratio of ratios) await kvtc('per-stream', 'per-stream', ratio, { allocation: 'stream', widths: [2, 4, 8] });

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

const base = new Map<string, Row>();
for (const [name, fn] of [
  ['FP8 E4M3', fp8],
  ['int8 per head', int8PerHead],
  ['int4 per head', int4PerHead],
  ['KIVI 4-bit', kivi(4)],
  ['KIVI 2-bit', kivi(2)],
] as const) {
  base.set(
    name,
    await measure(name, async (c) => {
      const r = fn(c);
      return { cache: asF16(r), bytes: r.bytes };
    }),
  );
}
await disposeModel();

/** A kvtc curve's ratio at a given KL: log-log interpolation between the bracketing points (null outside the curve). */
function ratioAtKl(plan: string, kl: number): number | null {
  const pts = rows.filter((r) => r.plan === plan).sort((a, b) => a.ratio - b.ratio);
  for (let i = 0; i + 1 < pts.length; i++) {
    const a = pts[i]!;
    const b = pts[i + 1]!;
    const lo = Math.min(a.meanKl, b.meanKl);
    const hi = Math.max(a.meanKl, b.meanKl);
    if (kl < lo || kl > hi || a.meanKl === b.meanKl) continue;
    const t = (Math.log(kl) - Math.log(a.meanKl)) / (Math.log(b.meanKl) - Math.log(a.meanKl));
    return Math.exp(Math.log(a.ratio) + t * (Math.log(b.ratio) - Math.log(a.ratio)));
  }
  return null;
}

console.log(`\n| method | ratio vs fp16 | relMSE K | relMSE V | next-token KL (nats) | top-1 agreement |`);
console.log('|---|---|---|---|---|---|');
for (const r of rows) {
  console.log(`| ${r.method} | ${r.ratio.toFixed(2)} | ${r.relMseK.toExponential(2)} | ${r.relMseV.toExponential(2)} | ${r.meanKl.toExponential(2)} | ${(100 * r.top1).toFixed(1)}% |`);
}
const equalKl: { baseline: string; kl: number; baselineRatio: number; plan: string; ratio: number | null; multiple: number | null; target: number }[] = [];
console.log(`\nAt equal mean next-token KL (interpolated on each kvtc curve; ${machine}):\n`);
console.log('| baseline | its KL | its ratio | kvtc plan | kvtc ratio there | multiple | target |');
console.log('|---|---|---|---|---|---|---|');
for (const [name, target] of [
  ['KIVI 4-bit', 2],
  ['int4 per head', 3],
] as const) {
  const b = base.get(name)!;
  for (const plan of ['whole-cache', 'per-stream']) {
    const r = ratioAtKl(plan, b.meanKl);
    const multiple = r === null ? null : r / b.ratio;
    equalKl.push({ baseline: name, kl: b.meanKl, baselineRatio: b.ratio, plan, ratio: r, multiple, target });
    console.log(`| ${name} | ${b.meanKl.toExponential(2)} | ${b.ratio.toFixed(2)} | ${plan} | ${r === null ? 'outside the curve' : r.toFixed(2)} | ${multiple === null ? '-' : `${multiple.toFixed(2)}x`} | >= ${target}x |`);
  }
}
/** Spearman rank correlation. */
function spearman(a: number[], b: number[]): number {
  const rank = (x: number[]) => {
    const order = x.map((v, i) => [v, i] as const).sort((p, q) => p[0] - q[0]);
    const r = new Array<number>(x.length);
    order.forEach(([, i], k) => (r[i] = k));
    return r;
  };
  const ra = rank(a);
  const rb = rank(b);
  const n = a.length;
  const d2 = ra.reduce((s, r, i) => s + (r - rb[i]!) ** 2, 0);
  return 1 - (6 * d2) / (n * (n * n - 1));
}
const kl = rows.map((r) => r.meanKl);
const ordering = {
  methods: rows.length,
  weightedError: spearman(rows.map((r) => r.weightedError), kl),
  relMseSum: spearman(rows.map((r) => r.relMseK + r.relMseV), kl),
  relMseK: spearman(rows.map((r) => r.relMseK), kl),
  relMseV: spearman(rows.map((r) => r.relMseV), kl),
};
console.log(`\nHow well each error measure orders all ${rows.length} methods by next-token KL (Spearman rank correlation; weights of a whole-cache 8x profile):\n`);
console.log('| measure | Spearman vs KL |');
console.log('|---|---|');
console.log(`| attention-weighted squared error (the allocation's objective) | ${ordering.weightedError.toFixed(3)} |`);
console.log(`| relMSE K + relMSE V | ${ordering.relMseSum.toFixed(3)} |`);
console.log(`| relMSE K | ${ordering.relMseK.toFixed(3)} |`);
console.log(`| relMSE V | ${ordering.relMseV.toFixed(3)} |`);
console.log(`\nBits per value against the Gaussian rate–distortion bound at the achieved squared error (coded tokens, per stream group; target: within 1.5x):\n`);
console.log('| method | stream | layers | achieved bits/value | bound bits/value | achieved / bound |');
console.log('|---|---|---|---|---|---|');
for (const b of bounds) {
  console.log(`| ${b.method} | ${b.stream} | ${b.layers} | ${b.bitsPerValue.toFixed(3)} | ${b.boundBitsPerValue.toFixed(3)} | ${b.factor.toFixed(2)} |`);
}
// A restricted run (--ratios, --plans) leaves the results file alone; it writes to --out=PATH if given.
const partial = ratioList !== undefined || planList !== undefined;
const outPath = argOf('out') ?? (partial ? undefined : fileURLToPath(new URL('./results/fidelity.json', import.meta.url)));
if (outPath) {
  mkdirSync(dirname(outPath), { recursive: true });
  writeFileSync(
    outPath,
    JSON.stringify(
      { date: new Date().toISOString(), machine, quick, ratios, plans: planList ?? ['whole-cache', 'per-stream'], prefix: PREFIX, steps: STEPS, sinks: SINKS, window: WINDOW, prompts: testPrompts.length, rows, equalKl, ordering, bounds },
      null,
      2,
    ),
  );
  console.log(`\nwrote ${outPath}`);
}
