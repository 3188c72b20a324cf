/**
 * Codec benchmark.
 *  (a) real stories260K KV (node-llama-cpp, f16 cache): compression ratio vs relative MSE for
 *      kvtc at several ratios, the paper's pipeline (same plan, DEFLATE instead of rANS), FP8,
 *      per-head int8/int4, KIVI 2/4-bit, and the Gaussian rate–distortion bound.
 *  (b) synthetic Llama-3.1-8B-shaped KV (32 layers x 8 KV heads x 128, bf16): encode/decode
 *      MB/s per core for PCA groups of 1, 4 and 32 layers, against zstd, DEFLATE and memcpy on
 *      the same bytes; calibration time and profile size. Beside them, in the same run: the
 *      core's FP32 FMA peak and the projection GEMM's GFLOP/s on the codec's shapes per SIMD
 *      path, and the 1-layer codec's MB/s per path (children with KVTC_SIMD) and with 2 threads.
 * Prints tables and writes bench/results/codec.json. `--quick` shrinks (b) to 1024 tokens;
 * `--only=real` or `--only=throughput` runs one part.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { availableParallelism, cpus, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { deflateRawSync } from 'node:zlib';
import { compress as zstdCompress } from '@bokuweb/zstd-wasm';
import { calibrate, CodecProfile, decode, encode, inspect, buildInfo, type KvCache } from '../src/index.js';
import { native } from '../src/binding.js';
import { toFloat32 } from '../src/half.js';
import { fp16, fp8, gaussianRdBound, int4PerHead, int8PerHead, kivi, type BaselineResult } from './baselines.js';
import { codedPayload, deflateSections, initZstd, zstdSections } from './payload.js';
import { disposeModel, loadPrompts, realCaches } from '../test/helpers/real-kv.js';
import { relMse } from '../test/helpers/metrics.js';
import { llamaShaped } from './llama-shaped.js';
import { kernels } from '../test/helpers/kernels.js';
import { mulberry32 } from '../test/helpers/synthetic.js';

const quick = process.argv.includes('--quick');
const out: Record<string, unknown> = {
  date: new Date().toISOString(),
  cpu: cpus()[0]?.model,
  cores: availableParallelism(),
  build: buildInfo(),
  quick,
};

function table(title: string, rows: Record<string, string | number>[]): void {
  console.log(`\n${title}`);
  if (rows.length === 0) return;
  const cols = [...new Set(rows.flatMap((r) => Object.keys(r)))];
  const fmt = (v: string | number | undefined) => (v === undefined ? '' : typeof v === 'number' ? (Math.abs(v) >= 1000 || Number.isInteger(v) ? String(Math.round(v * 100) / 100) : v.toPrecision(3)) : v);
  const widths = cols.map((c) => Math.max(c.length, ...rows.map((r) => fmt(r[c]).length)));
  const line = (vals: string[]) => '| ' + vals.map((v, i) => v.padEnd(widths[i]!)).join(' | ') + ' |';
  console.log(line(cols));
  console.log('|' + widths.map((w) => '-'.repeat(w + 2)).join('|') + '|');
  for (const r of rows) console.log(line(cols.map((c) => fmt(r[c]))));
}

// ---------------------------------------------------------------- (a) real stories260K KV
async function realKv(): Promise<void> {
  const prompts = loadPrompts();
  const half = Math.floor(prompts.length / 2);
  const tokens = 256;
  console.log(`(a) generating stories260K caches: ${half} train + ${prompts.length - half} test prompts x ${tokens} tokens`);
  const train = await realCaches({ prompts: prompts.slice(0, half), tokens, cacheType: 'f16' });
  const test = await realCaches({ prompts: prompts.slice(half), tokens, cacheType: 'f16' });
  await disposeModel();
  await initZstd();
  const rows: Record<string, string | number>[] = [];
  const coderRows: Record<string, string | number>[] = [];
  const fp16Bytes = test.reduce((s, c) => s + fp16(c).bytes, 0);

  for (const ratio of [4, 8, 16, 32, 64]) {
    const profile = await calibrate(train, { ratio, windowTokens: 0 });
    let kvtcBytes = 0;
    let paperBytes = 0;
    let zstdBytes = 0;
    let errK = 0;
    let errV = 0;
    let ransEncMs = 0;
    let ransDecMs = 0;
    let ransBytes = 0;
    let payload = 0;
    let deflate = { bytes: 0, encodeMs: 0, decodeMs: 0 };
    let zstd = { bytes: 0, encodeMs: 0, decodeMs: 0 };
    // Rate–distortion bound per stream: distortion per coded token vs the calibration spectrum.
    const bound = { keys: 0, values: 0 };
    const achievedBits = { keys: 0, values: 0 };
    let codedTokens = 0;
    for (const cache of test) {
      const blob = await encode(cache, profile);
      const plain = await encode(cache, profile, { entropy: false });
      const dec = await decode(blob, profile);
      kvtcBytes += blob.length;
      errK += relMse(cache, dec, 'keys') / test.length;
      errV += relMse(cache, dec, 'values') / test.length;
      const p = codedPayload(plain);
      payload += p.sections.reduce((s, x) => s + x.length, 0);
      // rANS on exactly these bytes, timed directly (the sections are stream groups, keys first).
      const handle = await profile.nativeHandle();
      const groups = profile.groups.length / 2;
      p.sections.forEach((sec, si) => {
        if (sec.length === 0) return;
        let t1 = performance.now();
        const coded = native.internals.ransEncode(handle, si < groups ? 0 : 1, si % groups, sec);
        ransEncMs += performance.now() - t1;
        t1 = performance.now();
        native.internals.ransDecode(handle, si < groups ? 0 : 1, si % groups, coded, sec.length);
        ransDecMs += performance.now() - t1;
        ransBytes += Math.min(coded.length, sec.length) + 4;
      });
      const d = deflateSections(p.sections);
      const z = zstdSections(p.sections);
      deflate = { bytes: deflate.bytes + d.bytes, encodeMs: deflate.encodeMs + d.encodeMs, decodeMs: deflate.decodeMs + d.decodeMs };
      zstd = { bytes: zstd.bytes + z.bytes, encodeMs: zstd.encodeMs + z.encodeMs, decodeMs: zstd.decodeMs + z.decodeMs };
      paperBytes += p.header + p.raw + d.bytes + 4;
      zstdBytes += p.header + p.raw + z.bytes + 4;
      const info = inspect(blob);
      const sinks = info.sinkTokens;
      const coded = (t: number) => t >= sinks;
      codedTokens += cache.tokens - sinks;
      for (const [si, stream] of (['keys', 'values'] as const).entries()) {
        const g = profile.groups.find((x) => x.stream === stream)!;
        // Mean ||x||^2 of the coded tokens times their relative error = squared error per token.
        const ms = meanSquare(cache, stream, coded);
        const dist = relMse(cache, dec, stream, coded) * ms;
        bound[stream] += gaussianRdBound(g.eigenvalues, dist).bitsPerComponentTotal * (cache.tokens - sinks);
        achievedBits[stream] += info.sections[1 + si]!.storedBytes * 8;
      }
    }
    const p = profile.groups[0]!.features;
    rows.push({
      method: `kvtc ${ratio}x (rANS)`,
      ratio: fp16Bytes / kvtcBytes,
      'relMSE K': errK,
      'relMSE V': errV,
      'bits/value K': achievedBits.keys / codedTokens / p,
      'bound bits/value K': bound.keys / codedTokens / p,
      'bits/value V': achievedBits.values / codedTokens / p,
      'bound bits/value V': bound.values / codedTokens / p,
    });
    rows.push({ method: `paper pipeline ${ratio}x (DEFLATE)`, ratio: fp16Bytes / paperBytes, 'relMSE K': errK, 'relMSE V': errV });
    rows.push({ method: `kvtc plan ${ratio}x + zstd`, ratio: fp16Bytes / zstdBytes, 'relMSE K': errK, 'relMSE V': errV });
    coderRows.push({
      ratio,
      'payload MB': payload / 1e6,
      'rANS B/payload B': ransBytes / payload,
      'DEFLATE B/payload B': deflate.bytes / payload,
      'zstd B/payload B': zstd.bytes / payload,
      'rANS dec MB/s': payload / 1e3 / ransDecMs,
      'DEFLATE dec MB/s': payload / 1e3 / deflate.decodeMs,
      'zstd dec MB/s': payload / 1e3 / zstd.decodeMs,
      'rANS enc MB/s': payload / 1e3 / ransEncMs,
      'DEFLATE enc MB/s': payload / 1e3 / deflate.encodeMs,
      'zstd enc MB/s': payload / 1e3 / zstd.encodeMs,
    });
  }
  for (const [name, fn] of [
    ['fp16', fp16],
    ['FP8 E4M3', fp8],
    ['int8 per head', int8PerHead],
    ['int4 per head', int4PerHead],
    ['KIVI 4-bit', kivi(4)],
    ['KIVI 2-bit', kivi(2)],
  ] as [string, (c: KvCache) => BaselineResult][]) {
    const rs = test.map(fn);
    rows.push({
      method: name,
      ratio: fp16Bytes / rs.reduce((s, r) => s + r.bytes, 0),
      'relMSE K': rs.reduce((s, r) => s + r.relMseK, 0) / rs.length,
      'relMSE V': rs.reduce((s, r) => s + r.relMseV, 0) / rs.length,
    });
  }
  table('(a) real stories260K KV (f16 cache, 24 test prompts x 256 tokens, window 0, sinks 4 raw): ratio vs fp16', rows);
  table('(a) entropy coders on the same packed payload (MB/s of payload, one core)', coderRows);
  out.realKv = { rows, coderRows };
}

function meanSquare(cache: KvCache, stream: 'keys' | 'values', keep: (t: number) => boolean): number {
  const rv = cache.layout.kvHeads * cache.layout.headDim;
  let sum = 0;
  let n = 0;
  const f = cache[stream].map((a) => toFloat32(a, cache.layout.dtype));
  for (let t = 0; t < cache.tokens; t++) {
    if (!keep(t)) continue;
    n++;
    for (const a of f) for (let j = t * rv; j < (t + 1) * rv; j++) sum += a[j]! * a[j]!;
  }
  return n ? sum / n : 0;
}


// ---------------------------------------------------------------- (b) Llama-3.1-8B-shaped KV
const cpuName = cpus()[0]?.model ?? 'unknown CPU';
const bestOf = (n: number, fn: () => void) => {
  let best = Infinity;
  for (let i = 0; i < n; i++) {
    const t = performance.now();
    fn();
    best = Math.min(best, performance.now() - t);
  }
  return best;
};

/**
 * Encode/decode MB/s of the 1-layer profile on one SIMD path: KVTC_SIMD is read once per
 * process, so every path but the active one runs in a child process on the same profile and
 * the same (deterministically generated) cache.
 */
async function codecSpeed(profileFile: string, tokens: number, threads: number) {
  const profile = CodecProfile.fromBytes(new Uint8Array(readFileSync(profileFile)));
  const cache = llamaShaped(tokens, 2);
  const rawBytes = 2 * 32 * tokens * 1024 * 2;
  let blob = await encode(cache, profile, { backend: 'cpu', threads });
  // decode() without `into` allocates a fresh output (first-touch page faults on every call);
  // with `into` it writes into the caller's cache, reused from call to call as an engine reuses
  // its KV buffers (filled once here, before the timed calls).
  const into = await decode(blob, profile, { backend: 'cpu', threads });
  const enc = { wall: Infinity, cpu: Infinity };
  const dec = { wall: Infinity, cpu: Infinity };
  const pre = { wall: Infinity, cpu: Infinity };
  for (let r = 0; r < 3; r++) {
    const e = await timed(async () => {
      blob = await encode(cache, profile, { backend: 'cpu', threads });
    });
    const d = await timed(() => decode(blob, profile, { backend: 'cpu', threads }));
    const q = await timed(() => decode(blob, profile, { backend: 'cpu', threads, into }));
    enc.wall = Math.min(enc.wall, e.wall);
    enc.cpu = Math.min(enc.cpu, e.cpu);
    dec.wall = Math.min(dec.wall, d.wall);
    dec.cpu = Math.min(dec.cpu, d.cpu);
    pre.wall = Math.min(pre.wall, q.wall);
    pre.cpu = Math.min(pre.cpu, q.cpu);
  }
  const rate = (ms: number) => rawBytes / 1e3 / ms;
  return { enc: rate(enc.wall), dec: rate(dec.wall), encCpu: rate(enc.cpu), decCpu: rate(dec.cpu), decInto: rate(pre.wall), decIntoCpu: rate(pre.cpu), bytes: blob.length };
}

/**
 * Wall and CPU milliseconds of one call. The CPU time is the whole process's (every thread,
 * GC included) over the call: on a machine shared with other work it is what the call costs,
 * where wall time also counts the time other processes held the core.
 */
async function timed(fn: () => Promise<unknown>): Promise<{ wall: number; cpu: number }> {
  const c = process.cpuUsage();
  const t = performance.now();
  await fn();
  const wall = performance.now() - t;
  const u = process.cpuUsage(c);
  return { wall, cpu: (u.user + u.system) / 1e3 };
}

async function codecSpeedOn(path: string, profileFile: string, tokens: number, threads: number, decodeMode = 'f32') {
  if (path === buildInfo().codecGemm && decodeMode === buildInfo().codecDecode) return codecSpeed(profileFile, tokens, threads);
  const out = execFileSync(process.execPath, ['--import', 'tsx', fileURLToPath(import.meta.url), `--speed-child=${profileFile},${tokens},${threads}`], {
    encoding: 'utf8',
    env: { ...process.env, KVTC_SIMD: path, KVTC_DECODE: decodeMode },
    maxBuffer: 1 << 20,
  });
  return JSON.parse(out.trim().split('\n').at(-1)!) as Awaited<ReturnType<typeof codecSpeed>>;
}

async function throughput(): Promise<void> {
  const tokens = quick ? 1024 : 4096;
  const paths = native.internals.simdPaths();
  console.log(`\n(b) ${cpuName}; SIMD paths ${paths.join(', ')} (active: ${buildInfo().codecGemm})`);
  console.log(`    generating Llama-3.1-8B-shaped bf16 KV: ${tokens} tokens (+ calibration samples)`);
  const calib = [llamaShaped(quick ? 512 : 1024, 1)];
  const cache = llamaShaped(tokens, 2);
  const rawBytes = 2 * 32 * tokens * 1024 * 2;
  const rows: Record<string, string | number>[] = [];
  // Lossless references on (a slice of) the same raw bytes.
  const sliceLen = Math.min(rawBytes / 2, 32 << 20);
  const big = new Uint8Array(sliceLen);
  for (let o = 0, l = 0; o < sliceLen; l++) {
    const src = new Uint8Array((cache.keys[l] as Uint16Array).buffer);
    big.set(src.subarray(0, Math.min(src.length, sliceLen - o)), o);
    o += src.length;
  }
  await initZstd();
  const time = (fn: () => void) => bestOf(1, fn);
  const dst = new Uint8Array(big.length);
  const memcpyMs = bestOf(3, () => dst.set(big));
  const zc = zstdCompress(big, 3);
  const zstdMs = time(() => zstdCompress(big, 3));
  const dc = deflateRawSync(big);
  const deflateMs = time(() => deflateRawSync(big));
  const mb = big.length / 1e6;
  rows.push({ method: 'memcpy', 'PCA layers': '-', 'calib s': '-', 'profile MB': '-', ratio: 1, 'encode MB/s': mb / (memcpyMs / 1e3), 'decode MB/s': mb / (memcpyMs / 1e3) });
  const { decompress } = await import('@bokuweb/zstd-wasm');
  rows.push({ method: 'zstd-3 (lossless)', 'PCA layers': '-', 'calib s': '-', 'profile MB': '-', ratio: big.length / zc.length, 'encode MB/s': mb / (zstdMs / 1e3), 'decode MB/s': mb / (time(() => decompress(zc)) / 1e3) });
  const { inflateRawSync } = await import('node:zlib');
  rows.push({ method: 'DEFLATE-6 (lossless)', 'PCA layers': '-', 'calib s': '-', 'profile MB': '-', ratio: big.length / dc.length, 'encode MB/s': mb / (deflateMs / 1e3), 'decode MB/s': mb / (time(() => inflateRawSync(dc)) / 1e3) });

  // Ceilings and the projection GEMM per path, in this run: FP32 FMA peak of one core, and the
  // codec's shapes (64-token batches; encode 64 x p x k with p = 1024, decode 64 x k x p).
  const gflops = (fn: () => number, reps = 5) => {
    let flops = 0;
    const ms = bestOf(reps, () => {
      flops = fn();
    });
    return flops / ms / 1e6;
  };
  const peaks: Record<string, number> = {};
  for (const p of paths) peaks[p] = gflops(() => native.internals.fmaPeak(p, 4_000_000));
  const corePeak = Math.max(...Object.values(peaks));
  const gemmRows: Record<string, string | number>[] = [];
  const shapes: [string, number, number, number][] = [
    ['encode k=224', 64, 224, 1024],
    ['encode k=320', 64, 320, 1024],
    ['decode k=224', 64, 1024, 224],
    ['decode k=320', 64, 1024, 320],
  ];
  for (const p of paths) {
    const row: Record<string, string | number> = { path: p, 'FMA peak GFLOP/s': peaks[p]! };
    for (const [name, m, n, k] of shapes) {
      const g = gflops(() => native.internals.gemmRepeat(p, m, n, k, p === 'scalar' ? 10 : 50));
      row[`${name} GFLOP/s`] = g;
      row[`${name} % core peak`] = (100 * g) / corePeak;
    }
    gemmRows.push(row);
  }
  table(`(b) FP32 GEMM on the codec's shapes (m x n x k; packed basis), one core of ${cpuName}; core peak = best path's FMA loop`, gemmRows);
  // The int8 reconstruction (KVTC_DECODE=int8) on the same decode shapes, against the int8 ceiling
  // of this core (a register-only vpdpbusd loop), with the 8B-shaped profiles' plans of group 0.
  let int8Rows: Record<string, string | number>[] = [];
  if (buildInfo().simd.includes('avx512vnni')) {
    const pk = kernels.int8Peak(20_000_000);
    const int8Peak = pk.ops / pk.seconds / 1e9;
    peaks.int8 = int8Peak;
    const plans: [string, number[]][] = [
      ['decode k=224 (key plan)', [16, 8, 16, 4, 16, 4, 16, 4, 64, 4, 64, 2, 16, 2, 16, 2]],
      ['decode k=320 (value plan)', [16, 8, 16, 4, 16, 2, 16, 2, 64, 2, 64, 2, 64, 2, 64, 2]],
    ];
    const gi = mulberry32(3);
    const row: Record<string, string | number> = { path: 'avx512 + VNNI int8', 'int8 peak GOPS': int8Peak };
    for (const [name, pairs] of plans) {
      const g: number[] = [];
      let k = 0, quads = 0;
      for (let i = 0; i < pairs.length; i += 2) {
        g.push(k, pairs[i]!, pairs[i + 1]!);
        k += pairs[i]!;
        quads += Math.ceil(pairs[i]! / 4) * (pairs[i + 1]! >= 6 ? 2 : 1);
      }
      const plan = new Uint32Array(g);
      const D = Float32Array.from({ length: 64 * k }, (_, i) => (gi() - 0.5) * 8 / Math.sqrt(1 + (i % k)));
      const rb = g.reduce((s, _, i) => (i % 3 === 0 ? s + 4 + Math.ceil((g[i + 1]! * g[i + 2]!) / 8) : s), 0);
      const rowsQ = new Uint8Array(64 * rb);
      kernels.quantize(plan, D, 64, k, rowsQ, 'avx512');
      const B = Float32Array.from({ length: k * 1024 }, () => gi() - 0.5);
      const sec = kernels.int8Decode(plan, B, 1024, rowsQ, 64, new Float32Array(1024), new Float32Array(64 * 1024), 300);
      const gops = (2 * 64 * quads * 4 * 1024) / sec / 1e9;
      row[`${name} GOPS`] = gops;
      row[`${name} % int8 peak`] = (100 * gops) / int8Peak;
    }
    int8Rows = [row];
    table(`(b) int8 reconstruction on the decode shapes (64 tokens x p=1024 per call, codes as quads of 4), one core of ${cpuName}; int8 peak = vpdpbusd loop`, int8Rows);
  }

  const profileFile = join(mkdtempSync(join(tmpdir(), 'kvtc-bench-')), 'profile-1layer.bin');
  for (const groupLayers of [1, 4, 32]) {
    const t = performance.now();
    const profile = await calibrate(calib, { ratio: 16, pcaGroupLayers: groupLayers, windowTokens: 128 });
    const calibS = (performance.now() - t) / 1e3;
    if (groupLayers === 1) writeFileSync(profileFile, profile.toBytes());
    let blob: Uint8Array = new Uint8Array(0);
    const e = await timed(async () => {
      blob = await encode(cache, profile, { backend: 'cpu' });
    });
    let dec: KvCache | undefined;
    const d = await timed(async () => {
      dec = await decode(blob, profile, { backend: 'cpu' });
    });
    rows.push({
      method: `kvtc 16x (${buildInfo().codecGemm})`,
      'PCA layers': groupLayers,
      'calib s': calibS,
      'profile MB': profile.byteLength / 1e6,
      ratio: rawBytes / blob.length,
      'encode MB/s': rawBytes / 1e3 / e.wall,
      'decode MB/s': rawBytes / 1e3 / d.wall,
      'encode MB/cpu-s': rawBytes / 1e3 / e.cpu,
      'decode MB/cpu-s': rawBytes / 1e3 / d.cpu,
      'relMSE K': relMse(cache, dec!, 'keys'),
    });
    console.log(`  PCA group ${groupLayers}: done`);
  }
  table(`(b) Llama-3.1-8B-shaped bf16 KV, ${tokens} tokens (${(rawBytes / 1e6).toFixed(0)} MB), one core per encode/decode (MB/cpu-s: per CPU-second of the process), ${cpuName}, load average ${loadavg()[0]!.toFixed(1)} at the start; lossless coders on a ${(mb).toFixed(0)} MB slice`, rows);

  // The 1-layer profile per SIMD path (best of 3 after a warm-up), with the int8 decode path,
  // and with 2 threads on the active path.
  const pathRows: Record<string, string | number>[] = [];
  for (const p of paths) {
    const r = await codecSpeedOn(p, profileFile, tokens, 1);
    pathRows.push({ path: `${p}, FP32 decode`, threads: 1, 'encode MB/s': r.enc, 'decode MB/s': r.dec, 'encode MB/cpu-s': r.encCpu, 'decode MB/cpu-s': r.decCpu, 'decode MB/s, into a reused cache': r.decInto, ratio: rawBytes / r.bytes });
  }
  if (buildInfo().simd.includes('avx512vnni')) {
    // The int8 reconstruction (the default on this CPU): decode only differs; encode is the same.
    const r = await codecSpeedOn('avx512', profileFile, tokens, 1, 'int8');
    pathRows.push({ path: 'avx512, int8 decode (default)', threads: 1, 'encode MB/s': r.enc, 'decode MB/s': r.dec, 'encode MB/cpu-s': r.encCpu, 'decode MB/cpu-s': r.decCpu, 'decode MB/s, into a reused cache': r.decInto, ratio: rawBytes / r.bytes });
  }
  const threads = Math.min(2, availableParallelism());
  if (threads > 1) {
    const r = await codecSpeed(profileFile, tokens, threads);
    pathRows.push({ path: `${buildInfo().codecGemm}, ${buildInfo().codecDecode} decode`, threads, 'encode MB/s': r.enc, 'decode MB/s': r.dec, 'encode MB/cpu-s': r.encCpu, 'decode MB/cpu-s': r.decCpu, 'decode MB/s, into a reused cache': r.decInto, ratio: rawBytes / r.bytes });
  }
  table(`(b) kvtc 16x, 1-layer PCA groups, per SIMD path (KVTC_SIMD), ${tokens} tokens, ${cpuName} (${availableParallelism()} cores)`, pathRows);
  out.throughput = { cpu: cpuName, tokens, rawBytes, peaks, gemm: gemmRows, int8: int8Rows, rows, paths: pathRows };
}

const speedChild = process.argv.find((a) => a.startsWith('--speed-child='))?.slice('--speed-child='.length);
if (speedChild) {
  const [file, tokens, threads] = speedChild.split(',');
  console.log(JSON.stringify(await codecSpeed(file!, Number(tokens), Number(threads))));
  process.exit(0);
}
const only = process.argv.find((a) => a.startsWith('--only='))?.slice('--only='.length);
if (!only || only === 'real') await realKv();
if (!only || only === 'throughput') await throughput();
mkdirSync(new URL('./results/', import.meta.url), { recursive: true });
const file = new URL('./results/codec.json', import.meta.url);
// A partial run (--only) keeps the other part's previous results.
const previous = only && existsSync(file) ? (JSON.parse(readFileSync(file, 'utf8')) as Record<string, unknown>) : {};
writeFileSync(file, JSON.stringify({ ...previous, ...out }, null, 2));
console.log('\nwrote bench/results/codec.json');
