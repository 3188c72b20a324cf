/**
 * GPU benchmark, on Llama-3.1-8B-shaped KV (32 layers x 8 KV heads x 128, bf16, 8K tokens):
 *  - CUDA encode (device cache -> pinned host arena) and decode (arena -> device buffers) GB/s,
 *    for batch 1 and batch 8 (eight caches in flight at once, each on its own stream);
 *  - the copy ceilings: host arena (page-locked) -> device, and device -> pageable host;
 *  - the CPU codec on the same data in the same run (one call, and one call per core at once);
 *  - restore time of the whole context from the host tier against its recompute time, read
 *    from bench/recompute_prefill.py's JSON (KVTC_RECOMPUTE_JSON) when that ran first;
 *  - a parity check: GPU and CPU decode the same blob to the same values (float rounding);
 *  - the projection GEMM alone at the shape one layer's projection has (8K tokens x 1024
 *    features x 1024 components), in every GEMM mode side by side: the FP32 CUDA-core kernel as
 *    the baseline, the tensor-core modes, and cuBLAS when it can be loaded.
 * Throughput counts raw cache bytes (bf16). Writes bench/results/gpu.json (or KVTC_BENCH_OUT).
 *
 * Without a usable CUDA device it records why and exits 0. `--quick` (for the CPU emulation of
 * CUDA: KVTC_ADDON=emulated) runs a tiny shape to check the benchmark itself.
 */
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { availableParallelism, cpus } from 'node:os';
import { dirname, resolve } from 'node:path';
import { type Backend, cudaUnavailableReason } from '../src/backend.js';
import { GPU_GEMM_MODES, native } from '../src/binding.js';
import { DTYPE_CODE } from '../src/codec/marshal.js';
import { deviceLayerBytes } from '../src/cuda/device.js';
import { type KvCache, buildInfo, calibrate, decode, decodeToDevice, deviceMemory, encode } from '../src/index.js';
import { toFloat32 } from '../src/half.js';
import { LLAMA_8B_LAYOUT, llamaShaped } from './llama-shaped.js';

const quick = process.argv.includes('--quick');
const OUT = process.env.KVTC_BENCH_OUT ?? resolve(import.meta.dirname, 'results/gpu.json');
const out: Record<string, unknown> = { date: new Date().toISOString(), cpu: cpus()[0]?.model, cores: availableParallelism(), build: buildInfo(), quick };

function save(): void {
  mkdirSync(dirname(OUT), { recursive: true });
  writeFileSync(OUT, JSON.stringify(out, null, 2) + '\n');
  console.log(`\nwrote ${OUT}`);
}

function table(title: string, rows: Record<string, string | number>[]): void {
  console.log(`\n${title}`);
  const cols = [...new Set(rows.flatMap((r) => Object.keys(r)))];
  const fmt = (v: string | number | undefined) => (v === undefined ? '' : typeof v === 'number' ? (Number.isInteger(v) ? String(v) : v.toPrecision(4)) : v);
  const widths = cols.map((c) => Math.max(c.length, ...rows.map((r) => fmt(r[c]).length)));
  const line = (vals: string[]) => '| ' + vals.map((v, i) => v.padEnd(widths[i]!)).join(' | ') + ' |';
  console.log(line(cols));
  console.log('|' + widths.map((w) => '-'.repeat(w + 2)).join('|') + '|');
  for (const r of rows) console.log(line(cols.map((c) => fmt(r[c]))));
}

/** Median wall time of fn over `reps` runs after one warm-up. */
async function timeMs(fn: () => Promise<unknown>, reps: number): Promise<number> {
  await fn();
  const t: number[] = [];
  for (let i = 0; i < reps; i++) {
    const t0 = performance.now();
    await fn();
    t.push(performance.now() - t0);
  }
  return t.sort((a, b) => a - b)[Math.floor(t.length / 2)]!;
}

/** Allocates per-layer device buffers of a cache shape; free() releases them. */
async function deviceCache(cache: KvCache, upload: boolean): Promise<{ keys: bigint[]; values: bigint[]; free: () => Promise<void> }> {
  const lb = deviceLayerBytes(cache.layout, cache.tokens);
  const keys: bigint[] = [];
  const values: bigint[] = [];
  for (let l = 0; l < cache.layout.layers; l++) {
    keys.push(await deviceMemory.alloc(lb));
    values.push(await deviceMemory.alloc(lb));
    if (upload) {
      await deviceMemory.upload(keys[l]!, cache.keys[l]!);
      await deviceMemory.upload(values[l]!, cache.values[l]!);
    }
  }
  return { keys, values, free: async () => void (await Promise.all([...keys, ...values].map((a) => deviceMemory.free(a)))) };
}

async function main(): Promise<void> {
  const problem = cudaUnavailableReason();
  if (problem !== null) {
    out.skipped = problem;
    console.log(`GPU benchmark skipped: ${problem}`);
    save();
    return;
  }
  const layers = quick ? 2 : 32;
  const tokens = quick ? 384 : 8192;
  const reps = quick ? 1 : 5;
  const batch = quick ? [1, 2] : [1, 8];
  out.shape = { ...LLAMA_8B_LAYOUT, layers, tokens };
  console.log(`generating ${layers}-layer Llama-3.1-8B-shaped bf16 KV: ${tokens} tokens (+ calibration samples)`);
  const cache = llamaShaped(tokens, 2, layers);
  const rawBytes = 2 * layers * deviceLayerBytes(cache.layout, tokens);
  let t0 = performance.now();
  const profile = await calibrate([llamaShaped(quick ? 256 : 2048, 1, layers)], { ratio: 16, pcaGroupLayers: 1, windowTokens: 128 });
  out.calibrationS = (performance.now() - t0) / 1e3;
  const handle = await profile.nativeHandle();
  const gpu = native.gpu!;

  // ---- GPU encode / decode, batch 1 and 8 (distinct device copies, one stream each)
  const rows: Record<string, string | number>[] = [];
  const dev = await Promise.all(Array.from({ length: Math.max(...batch) }, () => deviceCache(cache, true)));
  const targets = await Promise.all(dev.map(() => deviceCache(cache, false)));
  const encodeOne = (i: number) => gpu.encodeDevice(handle, { tokens, dtype: DTYPE_CODE.bf16, keys: dev[i]!.keys, values: dev[i]!.values }, true, true);
  const first = await encodeOne(0);
  out.ratio = rawBytes / first.bytes;
  const blobs = [first, ...(await Promise.all(dev.slice(1).map((_, i) => encodeOne(i + 1))))];
  for (const b of batch) {
    const encMs = await timeMs(async () => {
      const r = await Promise.all(Array.from({ length: b }, (_, i) => encodeOne(i)));
      for (const x of r) native.arenaFree(x.handle);
    }, reps);
    const decMs = await timeMs(
      () => Promise.all(Array.from({ length: b }, (_, i) => decodeToDevice(blobs[i]!.handle, profile, { layout: cache.layout, capacityTokens: tokens, keys: targets[i]!.keys, values: targets[i]!.values }))),
      reps,
    );
    rows.push({ backend: `cuda (${buildInfo().cudaGemm})`, batch: b, 'encode GB/s': (b * rawBytes) / 1e6 / encMs, 'decode GB/s': (b * rawBytes) / 1e6 / decMs, 'encode ms': encMs, 'decode ms': decMs });
  }

  // ---- copy ceilings
  const rawBlob = native.arenaPut(new Uint8Array(deviceLayerBytes(cache.layout, tokens)));
  const h2dMs = await timeMs(() => gpu.copyFromArena(targets[0]!.keys[0]!, rawBlob), reps * 4);
  const host = new Uint16Array(deviceLayerBytes(cache.layout, tokens) / 2);
  const d2hMs = await timeMs(() => deviceMemory.download(host, dev[0]!.keys[0]!), reps * 4);
  native.arenaFree(rawBlob);
  const layerMb = deviceLayerBytes(cache.layout, tokens) / 1e6;
  out.copy = { pinnedHostToDeviceGBs: layerMb / h2dMs, deviceToPageableHostGBs: layerMb / d2hMs, arenaPinned: native.arenaStats().pinned };

  // ---- CPU codec on (a slice of) the same data, same run
  const sliceTokens = quick ? tokens : 1024;
  const slice: KvCache = {
    layout: cache.layout,
    tokens: sliceTokens,
    keys: cache.keys.map((k) => (k as Uint16Array).subarray(0, sliceTokens * 1024)),
    values: cache.values.map((v) => (v as Uint16Array).subarray(0, sliceTokens * 1024)),
  };
  const sliceBytes = 2 * layers * deviceLayerBytes(cache.layout, sliceTokens);
  const cpuBlob = await encode(slice, profile, { backend: 'cpu' });
  const cores = availableParallelism();
  for (const [label, n] of [['cpu (1 call)', 1], [`cpu (${cores} calls)`, cores]] as const) {
    const encMs = await timeMs(() => Promise.all(Array.from({ length: n }, () => encode(slice, profile, { backend: 'cpu' }))), quick ? 1 : 2);
    const decMs = await timeMs(() => Promise.all(Array.from({ length: n }, () => decode(cpuBlob, profile, { backend: 'cpu' }))), quick ? 1 : 2);
    rows.push({ backend: label, batch: n, 'encode GB/s': (n * sliceBytes) / 1e6 / encMs, 'decode GB/s': (n * sliceBytes) / 1e6 / decMs, 'encode ms': encMs, 'decode ms': decMs });
  }
  out.throughput = rows;
  table(`codec throughput (raw bf16 bytes; ${tokens} tokens for cuda, ${sliceTokens} for cpu)`, rows);

  // ---- parity on the bench data: both backends decode the CPU's blob alike
  const onGpu = await decode(cpuBlob, profile, { backend: 'cuda' as Backend });
  const onCpu = await decode(cpuBlob, profile, { backend: 'cpu' });
  let worst = 0;
  for (let l = 0; l < layers; l++) {
    for (const s of ['keys', 'values'] as const) {
      const a = toFloat32(onGpu[s][l] as Uint16Array, 'bf16');
      const b = toFloat32(onCpu[s][l] as Uint16Array, 'bf16');
      for (let i = 0; i < a.length; i++) worst = Math.max(worst, Math.abs(a[i]! - b[i]!) / (1e-3 + 2 ** -7 * Math.max(Math.abs(a[i]!), Math.abs(b[i]!))));
    }
  }
  out.parityWorstRoundingRatio = worst;
  console.log(`\nparity: worst |gpu - cpu| / (1e-3 + one bf16 step) = ${worst.toPrecision(3)} (<= 1 is float rounding)`);

  // ---- restore vs recompute
  const restoreMs = (rows[0]!['decode ms'] as number);
  const recomputeFile = process.env.KVTC_RECOMPUTE_JSON;
  const recompute = recomputeFile && existsSync(recomputeFile) ? (JSON.parse(readFileSync(recomputeFile, 'utf8')) as { results: { batch: number; tokens: number; ms: number }[] }) : undefined;
  out.restore = { tokens, restoreMs, recompute: recompute?.results ?? 'not measured (run bench/recompute_prefill.py first)' };
  if (recompute) {
    table('restore from the host tier vs recompute (prefill)', recompute.results.map((r) => ({ batch: r.batch, tokens: r.tokens, 'prefill ms': r.ms, 'kvtc restore ms': r.batch === 1 ? restoreMs : (rows[1]!['decode ms'] as number), speedup: r.ms / (r.batch === 1 ? restoreMs : (rows[1]!['decode ms'] as number)) })));
  }
  for (const d of [...dev, ...targets]) await d.free();
  for (const b of blobs) native.arenaFree(b.handle);
  await gemmModes(quick ? 256 : tokens, quick ? 128 : 1024, reps);
  save();
}

/**
 * One layer's projection (m tokens x p features onto p components, basis transposed as in the
 * encoder) in each GEMM mode; error is the largest difference from the FP32 kernel's result,
 * relative to that result's largest magnitude.
 */
async function gemmModes(m: number, p: number, reps: number): Promise<void> {
  const gpu = native.gpu!;
  const a = Float32Array.from({ length: m * p }, (_, i) => Math.sin(i * 0.37) * (1 + (i % 13)));
  const b = Float32Array.from({ length: p * p }, (_, i) => Math.cos(i * 0.11));
  const size = { m, n: p, k: p, transB: true, repeats: reps };
  const flop = 2 * m * p * p;
  const rows: Record<string, string | number>[] = [];
  let reference: Float32Array | undefined;
  // The FP32 kernel first: it is the reference of the error column.
  for (const mode of ['fp32' as const, ...GPU_GEMM_MODES.filter((m) => m !== 'fp32')]) {
    let run: { c: Float32Array; seconds: number };
    try {
      await gpu.gemm(mode, a, b, { ...size, repeats: 1 }); // warm-up
      run = await gpu.gemm(mode, a, b, size);
    } catch (err) {
      rows.push({ mode, note: (err as Error).message });
      continue;
    }
    reference ??= run.c;
    let scale = 0;
    let diff = 0;
    for (let i = 0; i < run.c.length; i++) {
      scale = Math.max(scale, Math.abs(reference[i]!));
      diff = Math.max(diff, Math.abs(run.c[i]! - reference[i]!));
    }
    rows.push({ mode, ms: run.seconds * 1e3, 'TFLOP/s': flop / run.seconds / 1e12, 'error vs fp32': diff / scale });
  }
  out.gemm = { m, n: p, k: p, rows };
  table(`projection GEMM alone (${m} x ${p} x ${p}, basis transposed; mean of ${reps} runs)`, rows);
}

await main();
