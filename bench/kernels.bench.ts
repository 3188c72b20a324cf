/**
 * Leaf-kernel benchmark: the codec's innermost loops on one core, each beside its baseline and
 * the copy ceiling on the same bytes, in one run on one machine.
 *  - rANS: the branch-free span coders (native/rans.h) against the original byte-at-a-time coder
 *    (native/rans_reference.h) on the packed quantized sections of a real encode of a 2-layer
 *    Llama-3.1-8B-shaped bf16 cache (ratio 16, 1-layer PCA groups); streams checked identical.
 *  - quantize+pack / unpack+dequantize on the first key group's plan, per SIMD path (scalar is
 *    the code as it was), MB/s of f32 coefficients.
 *  - the int8 reconstruction of the decoder (KVTC_DECODE=int8, AVX-512 VNNI) on the profile's first
 *    key and value plans (p = 1024): int8 GOPS against the register-only vpdpbusd loop, for one
 *    64-token batch (the codec's, output in L2) and for 4096 tokens into one 16 MB output.
 *  - f16/bf16 <-> f32 row conversion per path, on an L2-resident 64 x 1024 block (as the codec
 *    converts rows) and a 16 MB array (memory-bound), GB/s of f32.
 * Times are the fastest of several repetitions in thread CPU time (the hooks in
 * native/js_kernels.cc), so other work on a shared machine inflates them less than wall time.
 * `npx tsx bench/kernels.bench.ts [--quick]`; writes bench/results/kernels.json.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { cpus } from 'node:os';
import { calibrate, encode } from '../src/index.js';
import { codedPayload } from './payload.js';
import { llamaShaped } from './llama-shaped.js';
import { DTYPE, kernels, rowBytes, rowK, type SimdPath } from '../test/helpers/kernels.js';
import { gaussian, mulberry32 } from '../test/helpers/synthetic.js';

const quick = process.argv.includes('--quick');
const cpu = cpus()[0]?.model ?? 'unknown CPU';
const simd = kernels.simd();
const reps = quick ? 2 : 5;

function table(title: string, rows: Record<string, string | number>[]): void {
  console.log(`\n${title}`);
  const cols = [...new Set(rows.flatMap((r) => Object.keys(r)))];
  const fmt = (v: string | number | undefined) => (v === undefined ? '' : typeof v === 'number' ? (v >= 100 ? v.toFixed(0) : v.toPrecision(3)) : v);
  const widths = cols.map((c) => Math.max(c.length, ...rows.map((r) => fmt(r[c]).length)));
  const line = (vals: string[]) => '| ' + vals.map((v, i) => v.padEnd(widths[i]!)).join(' | ') + ' |';
  console.log(line(cols));
  console.log('|' + widths.map((w) => '-'.repeat(w + 2)).join('|') + '|');
  for (const r of rows) console.log(line(cols.map((c) => fmt(r[c]))));
}

console.log(`kernels bench on ${cpu}; SIMD paths ${simd.paths.join(', ')} (codec uses ${simd.best})`);
const out: Record<string, unknown> = { date: new Date().toISOString(), cpu, simd, quick };

// ---- rANS on real packed sections --------------------------------------------------------------
const tokens = quick ? 1024 : 4096;
const layers = 2;
const profile = await calibrate([llamaShaped(1024, 1, layers)], { ratio: 16, pcaGroupLayers: 1, windowTokens: 0 });
const plain = await encode(llamaShaped(tokens, 2, layers), profile, { entropy: false });
const { sections } = codedPayload(plain);
const handle = await profile.nativeHandle();
const perStream = sections.length / 2;
let raw = 0, coded = 0, refEnc = 0, fastEnc = 0, spanEnc = 0, refDec = 0, fastDec = 0, spanDec = 0, copy = 0;
for (let si = 0; si < sections.length; si++) {
  const sec = sections[si]!;
  if (sec.length === 0) continue;
  const t = kernels.profileTables(handle, si < perStream ? 0 : 1, si % perStream);
  const a = kernels.ransEncode(t.freqs, t.context, sec, 'reference', reps);
  const b = kernels.ransEncode(t.freqs, t.context, sec, 'fast', reps);
  const c = kernels.ransEncode(t.freqs, t.context, sec, 'span', reps);
  if (Buffer.compare(a.bytes, b.bytes) !== 0 || Buffer.compare(a.bytes, c.bytes) !== 0) throw new Error(`section ${si}: streams differ`);
  spanEnc += c.seconds;
  const o1 = new Uint8Array(sec.length), o2 = new Uint8Array(sec.length);
  const d1 = kernels.ransDecode(t.freqs, t.context, a.bytes, o1, 'reference', reps);
  const d2 = kernels.ransDecode(t.freqs, t.context, a.bytes, o2, 'fast', reps);
  if (d1.status || d2.status || Buffer.compare(o1, sec) || Buffer.compare(o2, sec)) throw new Error(`section ${si}: decode failed`);
  const d3 = kernels.ransDecode(t.freqs, t.context, a.bytes, o2, 'span', reps);
  if (d3.status || Buffer.compare(o2, sec)) throw new Error(`section ${si}: span decode failed`);
  spanDec += d3.seconds;
  copy += kernels.memcpy(sec, o1, reps);
  raw += sec.length;
  coded += a.bytes.length;
  refEnc += a.seconds;
  fastEnc += b.seconds;
  refDec += d1.seconds;
  fastDec += d2.seconds;
}
const mbps = (s: number) => raw / 1e6 / s;
const ransRows = [
  { coder: 'memcpy (same bytes)', 'encode MB/s': mbps(copy), 'decode MB/s': mbps(copy) },
  { coder: 'rANS reference (before)', 'encode MB/s': mbps(refEnc), 'decode MB/s': mbps(refDec) },
  { coder: 'rANS fast (after, CPU codec)', 'encode MB/s': mbps(fastEnc), 'decode MB/s': mbps(fastDec) },
  { coder: 'rANS span (after, GPU kernels\' code on the CPU)', 'encode MB/s': mbps(spanEnc), 'decode MB/s': mbps(spanDec) },
  { coder: 'speed-up fast / reference', 'encode MB/s': refEnc / fastEnc, 'decode MB/s': refDec / fastDec },
];
table(`rANS on ${(raw / 1e6).toFixed(1)} MB of packed sections (${sections.length} stream groups, coded/packed ${(coded / raw).toFixed(3)}; streams identical), MB/s of packed bytes, ${cpu}`, ransRows);
out.rans = { packedBytes: raw, codedBytes: coded, rows: ransRows };

// ---- quantize + pack / unpack + dequantize -------------------------------------------------------
const plan = kernels.profileTables(handle, 0, 0).groups;
const k = rowK(plan), rb = rowBytes(plan), n = 4096;
const g = gaussian(mulberry32(5));
const D = new Float32Array(n * k);
for (let t = 0; t < n; t++) for (let c = 0; c < k; c++) D[t * k + c] = (g() * 4) / Math.sqrt(1 + c);
const rows = new Uint8Array(n * rb);
const back = new Float32Array(n * k);
const sizes = [];
for (let i = 0; i < plan.length; i += 3) sizes.push(`${plan[i + 1]}x${plan[i + 2]}b`);
const qRows: Record<string, string | number>[] = [];
const coefMB = (n * k * 4) / 1e6;
for (const p of simd.paths) {
  const q = kernels.quantize(plan, D, n, k, rows, p, reps);
  const d = kernels.dequantize(plan, rows, n, back, k, p, reps);
  qRows.push({ path: p, 'quantize+pack MB/s': coefMB / q, 'unpack+dequantize MB/s': coefMB / d, 'quantize ms / 4096 tokens': q * 1e3 });
}
const memQ = kernels.memcpy(D, back, reps);
qRows.unshift({ path: 'memcpy (f32 coefs)', 'quantize+pack MB/s': coefMB / memQ, 'unpack+dequantize MB/s': coefMB / memQ });
table(`quantization, key group 0 of the profile: k=${k}, plan ${sizes.join(' ')}, ${n} tokens; MB/s of f32 coefficients, ${cpu}`, qRows);
out.quant = { k, plan: sizes, tokens: n, rows: qRows };

// ---- int8 reconstruction (VNNI) ----------------------------------------------------------------
if (simd.paths.includes('avx512') && (await import('../src/index.js')).buildInfo().simd.includes('avx512vnni')) {
  const peakRun = kernels.int8Peak(quick ? 5_000_000 : 20_000_000);
  const peak = peakRun.ops / peakRun.seconds / 1e9;
  const iRows: Record<string, string | number>[] = [{ kernel: 'vpdpbusd peak loop (12 chains)', 'int8 GOPS': peak, '% of int8 peak': 100 }];
  const p = 1024;
  const gi = gaussian(mulberry32(11));
  for (const stream of [0, 1]) {
    const planI = kernels.profileTables(handle, stream, 0).groups;
    const kI = rowK(planI), rbI = rowBytes(planI);
    let quads = 0;
    for (let i = 0; i < planI.length; i += 3) quads += Math.ceil(planI[i + 1]! / 4) * (planI[i + 2]! >= 6 ? 2 : 1);
    const B = Float32Array.from({ length: kI * p }, () => gi() * 0.05);
    const mean = new Float32Array(p);
    const Dq = Float32Array.from({ length: 4096 * kI }, (_, i) => (gi() * 4) / Math.sqrt(1 + (i % kI)));
    const rowsI = new Uint8Array(4096 * rbI);
    kernels.quantize(planI, Dq, 4096, kI, rowsI, simd.best);
    for (const n of [64, 4096]) {
      const X = new Float32Array(n * p);
      const sec = kernels.int8Decode(planI, B, p, rowsI, n, mean, X, n === 64 ? (quick ? 50 : 300) : reps);
      const ops = 2 * n * quads * 4 * p;
      iRows.push({
        kernel: `${stream === 0 ? 'key' : 'value'} group 0, k=${kI} (${quads} quads), ${n} tokens`,
        'int8 GOPS': ops / sec / 1e9,
        '% of int8 peak': (100 * ops) / sec / 1e9 / peak,
        'ms per 4096 tokens': (sec * 1e3 * 4096) / n,
      });
    }
  }
  table(`int8 reconstruction (codes x int8 basis, p=${p}; GOPS = 2 per multiply-add), one core of ${cpu}`, iRows);
  out.int8 = iRows;
} else {
  console.log('\nint8 reconstruction: skipped (no AVX-512 VNNI on this CPU)');
}

// ---- dtype conversion --------------------------------------------------------------------------------
const cRows: Record<string, string | number>[] = [];
const r = mulberry32(9);
for (const [label, elems, creps] of [['L2 64x1024', 64 * 1024, quick ? 20 : 200], ['16 MB', 4 << 20, reps]] as const) {
  const f = Float32Array.from({ length: elems }, () => (r() - 0.5) * 8);
  const h = new Uint16Array(elems);
  const f2 = new Float32Array(elems);
  const gb = (s: number) => (elems * 4) / 1e9 / s;
  cRows.push({ block: label, path: 'memcpy (f32 bytes)', 'f32->bf16': gb(kernels.memcpy(f, f2, creps)), 'bf16->f32': gb(kernels.memcpy(f, f2, creps)) });
  for (const p of simd.paths as SimdPath[]) {
    const row: Record<string, string | number> = { block: label, path: p };
    for (const [name, dt] of [['bf16', DTYPE.bf16], ['f16', DTYPE.f16]] as const) {
      row[`f32->${name}`] = gb(kernels.storeRow(f, dt, h, p, creps));
      row[`${name}->f32`] = gb(kernels.loadRow(h, dt, f2, p, creps));
    }
    cRows.push(row);
  }
}
table(`dtype conversion, GB/s of f32, ${cpu}`, cRows);
out.conversion = cRows;

mkdirSync('bench/results', { recursive: true });
writeFileSync('bench/results/kernels.json', JSON.stringify(out, null, 2));
