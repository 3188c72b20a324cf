/**
 * Scale benchmark: how the store's per-operation costs grow with the number of disk records.
 * For each size (1k, 10k, 100k records; 1M with --full) it fills a disk tier with small sessions
 * (2 layers x 2 x 16, 64 tokens; one encoded blob under every id, written in batched
 * transactions), then measures in a fresh process-like open: open time, get (disk hit, no
 * promotion) and has() p50/p99, stats() time, and the cost of an eviction by disk capacity
 * (puts into a full tier). Prints a table beside the baseline of the smallest size and writes
 * bench/results/scale.json. `--quick`: 1k and 10k only.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { KvStore, calibrate, encode } from '../src/index.js';
import { DiskTier } from '../src/store/disk-tier.js';
import { LAYOUT } from '../test/helpers/store.js';
import { syntheticCache } from '../test/helpers/synthetic.js';

const quick = process.argv.includes('--quick');
const full = process.argv.includes('--full');
const SIZES = quick ? [1_000, 10_000] : full ? [1_000, 10_000, 100_000, 1_000_000] : [1_000, 10_000, 100_000];

const pct = (v: number[], p: number) => [...v].sort((a, b) => a - b)[Math.min(v.length - 1, Math.floor((p / 100) * v.length))]!;
const profile = await calibrate([1, 2, 3].map((s) => syntheticCache({ layout: LAYOUT, tokens: 300, seed: s })), { ratio: 8, windowTokens: 8, sinkTokens: 2 });
const cache = syntheticCache({ layout: LAYOUT, tokens: 64, seed: 9 });
const blob = await encode(cache, profile);
const rawBytes = 2 * LAYOUT.layers * 64 * LAYOUT.kvHeads * LAYOUT.headDim * 4;

async function fill(path: string, n: number): Promise<number> {
  const mapSizeBytes = Math.max(64 << 20, n * 4 * 4096);
  const t = DiskTier.open({ path, capacityBytes: 1 << 40, mapSizeBytes });
  const now = Date.now();
  const batch = 5000;
  for (let i = 0; i < n; i += batch) {
    const items = [];
    for (let j = i; j < Math.min(n, i + batch); j++) {
      items.push({
        meta: { id: `s${j}`, fingerprint: profile.fingerprint, layout: LAYOUT, tokens: 64, rawBytes, createdAt: now, lastAccess: now + j, ttlMs: 0, priority: 0, pinned: false, format: 'kvtc' as const },
        blob,
      });
    }
    await t.putMany(items);
  }
  const bytes = t.footprintBytes;
  await t.close();
  return bytes;
}

const rows: Record<string, number | string>[] = [];
for (const n of SIZES) {
  const dir = await mkdtemp(join(tmpdir(), 'kvtc-scale-'));
  try {
    const f0 = performance.now();
    const footprint = await fill(dir, n);
    const fillS = (performance.now() - f0) / 1000;
    const mapSizeBytes = Math.max(64 << 20, n * 4 * 4096);
    const o0 = performance.now();
    const store = await KvStore.open({ profile, path: dir, tiers: { disk: { capacityBytes: footprint + 1, mapSizeBytes } }, workers: { minThreads: 1, maxThreads: 1 } });
    const openMs = performance.now() - o0;
    const gets: number[] = [];
    const hasT: number[] = [];
    let seed = 12345;
    const rnd = () => (seed = (seed * 1103515245 + 12345) % 2147483648) / 2147483648;
    for (let i = 0; i < 300; i++) {
      const id = `s${Math.floor(rnd() * n)}`;
      const g0 = performance.now();
      await store.get(id, { promote: false });
      gets.push(performance.now() - g0);
    }
    for (let i = 0; i < 20000; i++) {
      const id = `s${Math.floor(rnd() * n)}`;
      const h0 = performance.now();
      store.has(id);
      hasT.push(performance.now() - h0);
    }
    const s0 = performance.now();
    for (let i = 0; i < 20; i++) store.stats();
    const statsMs = (performance.now() - s0) / 20;
    // A full disk tier: every further session evicts the least recently used one.
    const e0 = performance.now();
    const PUTS = 100;
    for (let i = 0; i < PUTS; i++) {
      await store.put(`new${i}`, cache);
      await store.evict(`new${i}`, { to: 'disk' });
    }
    const evictMs = (performance.now() - e0) / PUTS;
    await store.close();
    rows.push({
      records: n,
      'fill s': fillS,
      'open ms': openMs,
      'get p50 ms': pct(gets, 50),
      'get p99 ms': pct(gets, 99),
      'has p99 us': pct(hasT, 99) * 1000,
      'stats ms': statsMs,
      'put+evict to a full disk ms': evictMs,
    });
    console.log(rows.at(-1));
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

console.log(`\nscale: disk records of 64-token sessions; ${cpus()[0]?.model ?? 'cpu'}, ${cpus().length} cores`);
const cols = Object.keys(rows[0]!);
console.log(`| ${cols.join(' | ')} |`);
console.log(`|${cols.map(() => '---').join('|')}|`);
for (const r of rows) console.log(`| ${cols.map((c) => (typeof r[c] === 'number' ? (Number.isInteger(r[c]) ? String(r[c]) : (r[c] as number).toFixed(3)) : String(r[c]))).join(' | ')} |`);
mkdirSync(new URL('./results/', import.meta.url), { recursive: true });
writeFileSync(new URL('./results/scale.json', import.meta.url), JSON.stringify({ date: new Date().toISOString(), cpu: cpus()[0]?.model, cores: cpus().length, rows }, null, 2));
console.log('\nwrote bench/results/scale.json');
