/**
 * Fleet benchmark: two serving processes on one machine behind a load balancer without session
 * affinity — each turn of a conversation goes to either process at random — sharing sessions
 * through one redis-server (the remote tier), against each process alone (a turn that lands on
 * the process that did not serve the previous one is a miss: its prefix would be recomputed), and
 * kvtc chunks against raw chunks on the remote. Each turn: get the session, append 32–128 tokens,
 * put it back and let it go idle (evict to the host tier, which sends it to the remote).
 *
 * Prints per mode: hit rate, how often the version the previous turn left was served (a process
 * alone may hold an older version of the conversation: a hit, but stale), caller-visible get p50/p99 per tier, bytes sent to and received
 * from the remote, tokens encoded; writes bench/results/fleet.json. `--quick` runs fewer turns.
 * Needs redis-server on PATH. The processes are this file run as a child (`--node`).
 */
import { fork } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { CodecProfile, KvStore, calibrate, type GetStatus, type KvCache, type KvLayout } from '../src/index.js';
import { mulberry32, syntheticCache, withDtype } from '../test/helpers/synthetic.js';

const LAYOUT: KvLayout = { layers: 4, kvHeads: 4, headDim: 64, dtype: 'f32', rope: { theta: 10000, style: 'neox' } };
const MAX_TOKENS = 768;

/** Session i's data (the same in every process): a view of its first `len` tokens. */
const sessions = new Map<number, KvCache>();
function sessionAt(i: number, len: number): { cache: KvCache; tokens: Int32Array } {
  let whole = sessions.get(i);
  if (!whole) sessions.set(i, (whole = withDtype(syntheticCache({ layout: LAYOUT, tokens: MAX_TOKENS, seed: 7000 + i }), 'f16')));
  const rv = LAYOUT.kvHeads * LAYOUT.headDim;
  const cut = (a: ArrayBufferView) => (a as Uint16Array).subarray(0, len * rv);
  const cache: KvCache = { layout: whole.layout, tokens: len, keys: whole.keys.map(cut), values: whole.values.map(cut), positions: whole.positions!.subarray(0, len) };
  return { cache, tokens: Int32Array.from({ length: len }, (_, t) => i * 10_000 + t) };
}

type Msg = { op: 'turn'; id: number; len: number } | { op: 'stats' } | { op: 'close' };

if (process.argv.includes('--node')) {
  // A serving process: its own store directory, the shared remote (or none).
  const [profilePath, path, remoteJson, compression] = process.argv.slice(process.argv.indexOf('--node') + 1);
  const remote = remoteJson === 'none' ? undefined : (JSON.parse(remoteJson!) as { url: string; namespace: string });
  const store = await KvStore.open({
    profile: await CodecProfile.load(profilePath!),
    path: path!,
    compression: compression as 'kvtc' | 'none',
    chunkTokens: 128,
    flushOnClose: false,
    workers: { minThreads: 1, maxThreads: 1 },
    ...(remote ? { remote } : {}),
  });
  process.on('message', (m: Msg) => {
    void (async () => {
      if (m.op === 'turn') {
        const status: GetStatus = {};
        const g0 = performance.now();
        const got = await store.get(`s${m.id}`, { status });
        const ms = performance.now() - g0;
        const { cache, tokens } = sessionAt(m.id, m.len);
        await store.put(`s${m.id}`, cache, { tokens });
        await store.evict(`s${m.id}`);
        await store.settled();
        process.send!({ hit: got !== undefined, tier: status.tier, ms, tokens: got?.tokens ?? 0 });
      } else if (m.op === 'stats') {
        const s = store.stats();
        process.send!({ sent: s.remote?.bytesSent ?? 0, received: s.remote?.bytesReceived ?? 0, encoded: s.codec.encodedTokens });
      } else {
        await store.close();
        process.send!({ closed: true });
        process.exit(0);
      }
    })();
  });
  process.send!({ ready: true });
} else {
  const { RedisServer, redisServerMissing } = await import('../test/helpers/redis-server.js');
  if (redisServerMissing) {
    console.log(`fleet bench skipped: ${redisServerMissing}`);
    process.exit(0);
  }
  const quick = process.argv.includes('--quick');
  const N = quick ? 16 : 32;
  const TURNS = quick ? 120 : 400;
  const dir = await mkdtemp(join(tmpdir(), 'kvtc-fleet-'));
  const profile = await calibrate([withDtype(syntheticCache({ layout: LAYOUT, tokens: 512, seed: 1 }), 'f16')], { ratio: 16, windowTokens: 32 });
  const profilePath = join(dir, 'profile.kvtcp');
  await profile.save(profilePath);
  const server = await RedisServer.start();
  const self = fileURLToPath(import.meta.url);

  // The schedule, the same for every mode: which session, how long after the turn, which process.
  const rand = mulberry32(42);
  const lens = Array.from({ length: N }, () => 64 + Math.floor(rand() * 192));
  const w = Array.from({ length: N }, (_, i) => 1 / (i + 1) ** 1.1);
  const total = w.reduce((a, b) => a + b, 0);
  const schedule: { id: number; len: number; node: number }[] = [];
  for (let t = 0; t < TURNS; t++) {
    let u = rand() * total;
    let id = 0;
    while (u > w[id]! && id < N - 1) u -= w[id++]!;
    let len = lens[id]! + 32 + Math.floor(rand() * 97);
    if (len > MAX_TOKENS) len = 64 + Math.floor(rand() * 64); // the conversation starts over
    lens[id] = len;
    schedule.push({ id, len, node: rand() < 0.5 ? 0 : 1 });
  }

  const modes = [
    { name: 'shared remote, kvtc', remote: true, compression: 'kvtc' },
    { name: 'shared remote, raw chunks', remote: true, compression: 'none' },
    { name: 'each process alone, kvtc', remote: false, compression: 'kvtc' },
  ];
  const rows: Record<string, unknown>[] = [];
  let ns = 0;
  for (const mode of modes) {
    console.log(`running ${TURNS} turns over 2 processes: ${mode.name}`);
    const remoteArg = mode.remote ? JSON.stringify({ url: server.url, namespace: `fleet${ns++}` }) : 'none';
    const nodes = await Promise.all([0, 1].map(async (k) => {
      const child = fork(self, ['--node', profilePath, join(dir, `${mode.compression}-${ns}-${k}`), remoteArg, mode.compression], { execArgv: ['--import', 'tsx'], stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
      await new Promise((resolve) => child.once('message', resolve));
      return child;
    }));
    const ask = <T>(k: number, m: Msg) => new Promise<T>((resolve) => {
      nodes[k]!.once('message', (r) => resolve(r as T));
      nodes[k]!.send(m);
    });
    const lat: Record<string, number[]> = { device: [], host: [], disk: [], remote: [] };
    let hits = 0;
    let current = 0;
    const last = new Map<number, number>();
    for (const s of schedule) {
      const r = await ask<{ hit: boolean; tier?: string; ms: number; tokens: number }>(s.node, { op: 'turn', id: s.id, len: s.len });
      if (r.hit) {
        hits++;
        lat[r.tier!]!.push(r.ms);
        if (r.tokens === last.get(s.id)) current++; // the version the previous turn left, not an older one
      }
      last.set(s.id, s.len);
    }
    const st = await Promise.all([0, 1].map((k) => ask<{ sent: number; received: number; encoded: number }>(k, { op: 'stats' })));
    await Promise.all([0, 1].map((k) => ask(k, { op: 'close' })));
    const pct = (v: number[], p: number) => (v.length ? [...v].sort((a, b) => a - b)[Math.min(v.length - 1, Math.floor((p / 100) * v.length))]! : NaN);
    const first = new Set(schedule.map((s) => s.id)).size; // first turns are misses in every mode
    rows.push({
      mode: mode.name,
      'hit %': (100 * hits) / TURNS,
      'hit % of turns after the first': (100 * hits) / (TURNS - first),
      'current version % of turns after the first': (100 * current) / (TURNS - first),
      'remote hits': lat.remote!.length,
      'caller device p50 ms': pct(lat.device!, 50),
      'caller host p50 ms': pct(lat.host!, 50),
      'caller remote p50 ms': pct(lat.remote!, 50),
      'caller remote p99 ms': pct(lat.remote!, 99),
      'MB sent to remote': (st[0]!.sent + st[1]!.sent) / 1e6,
      'MB received from remote': (st[0]!.received + st[1]!.received) / 1e6,
      'encoded tokens / turn': (st[0]!.encoded + st[1]!.encoded) / TURNS,
    });
  }
  await server.stop();
  await rm(dir, { recursive: true, force: true });
  console.log(`\nFleet: ${N} conversations, ${TURNS} turns (+32-128 tokens each) routed at random to 2 processes; 4 layers x 4 x 64 f16, chunkTokens 128, ratio 16; redis-server on loopback; ${cpus()[0]?.model ?? 'cpu'}, ${cpus().length} cores`);
  const cols = Object.keys(rows[0]!);
  console.log(`| metric | ${rows.map((r) => String(r['mode'])).join(' | ')} |`);
  console.log(`|---|${rows.map(() => '---').join('|')}|`);
  const f = (v: unknown) => (typeof v === 'number' ? (Number.isInteger(v) ? String(v) : v.toFixed(2)) : String(v));
  for (const c of cols.slice(1)) console.log(`| ${c} | ${rows.map((r) => f(r[c])).join(' | ')} |`);
  mkdirSync(new URL('./results/', import.meta.url), { recursive: true });
  writeFileSync(new URL('./results/fleet.json', import.meta.url), JSON.stringify({ date: new Date().toISOString(), cpu: cpus()[0]?.model, cores: cpus().length, quick, rows }, null, 2));
  console.log('\nwrote bench/results/fleet.json');
}
