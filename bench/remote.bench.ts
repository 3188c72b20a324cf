/**
 * Remote tier benchmark: the same sessions through one redis-server on loopback, stored as
 * kvtc-encoded chunks and as raw bf16 chunks, side by side in one run.
 *
 * Per mode: bytes sent by the puts, bytes received by the gets (RemoteTier.stats()), the remote
 * get latency of a whole session (p50 / p99 of caller-visible getSession time), and, for kvtc, get
 * plus decode of every chunk (what a caller needs before it has KV again). Beside them, the
 * ceiling of the same machine and server: a bare ioredis GET of the raw sessions' values (no
 * frame checks, no leases), so the tier's own overhead shows; and an ablation of the read path
 * (GET pipelined with a renewal script, as the tier reads, against the value passed through a
 * script that reads and renews), interleaved on the same keys.
 *
 * Data: synthetic low-rank bf16 KV shaped like Llama-3.1-8B per layer (bench/llama-shaped.ts),
 * `--layers` layers (default 4), sessions of `--chunks` chunks (default 4) of `--tokens` tokens
 * (default 128). It measures wire bytes and latency, not fidelity (bench/fidelity.bench.ts does).
 * Prints a table and writes bench/results/remote.json. Needs redis-server on PATH.
 */
import { Redis } from 'ioredis';
import { createHash } from 'node:crypto';
import { mkdirSync, writeFileSync } from 'node:fs';
import { availableParallelism, cpus } from 'node:os';
import { spawnSync } from 'node:child_process';
import { calibrate, decode, encode, type KvCache } from '../src/index.js';
import { RemoteTier, type RemoteChunk } from '../src/store/remote-tier.js';
import { RedisServer, redisServerMissing } from '../test/helpers/redis-server.js';
import { llamaShaped } from './llama-shaped.js';

function arg(name: string, def: number): number {
  const a = process.argv.find((s) => s.startsWith(`--${name}=`));
  return a ? Number(a.split('=')[1]) : def;
}

const LAYERS = arg('layers', 4);
const TOKENS = arg('tokens', 128);
const CHUNKS = arg('chunks', 4);
const SESSIONS = arg('sessions', 6);
const ROUNDS = arg('rounds', 20);
const RATIO = arg('ratio', 8);

function rawBytes(c: KvCache): Uint8Array {
  const parts = [...c.keys, ...c.values].map((a) => Buffer.from(a.buffer, a.byteOffset, a.byteLength));
  return Buffer.concat(parts);
}

function pct(xs: number[], p: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))]!;
}

function keyOf(b: Uint8Array): string {
  return createHash('sha256').update(b).digest('hex');
}

async function main(): Promise<void> {
  if (redisServerMissing) {
    console.log(`remote bench not run: ${redisServerMissing}`);
    return;
  }
  const machine = {
    cpu: cpus()[0]?.model,
    cores: availableParallelism(),
    redis: spawnSync('redis-server', ['--version'], { encoding: 'utf8' }).stdout.trim(),
    node: process.version,
  };
  console.log(`machine: ${machine.cpu}, ${machine.cores} cores; ${machine.redis}; node ${machine.node}`);
  console.log(`data: ${SESSIONS} sessions x ${CHUNKS} chunks x ${TOKENS} tokens, ${LAYERS} layers x 8 KV heads x 128 (bf16), kvtc ratio ${RATIO}`);

  const profile = await calibrate([llamaShaped(512, 1, LAYERS), llamaShaped(512, 2, LAYERS)], { ratio: RATIO, windowTokens: 0 });
  const caches: KvCache[][] = [];
  const raw: RemoteChunk[][] = [];
  const enc: RemoteChunk[][] = [];
  for (let s = 0; s < SESSIONS; s++) {
    const cs: KvCache[] = [];
    for (let c = 0; c < CHUNKS; c++) cs.push(llamaShaped(TOKENS, 1000 + s * CHUNKS + c, LAYERS));
    caches.push(cs);
    raw.push(cs.map((c) => {
      const b = rawBytes(c);
      return { key: keyOf(b), blob: b };
    }));
    const blobs = await Promise.all(cs.map((c) => encode(c, profile)));
    enc.push(blobs.map((b) => ({ key: keyOf(b), blob: b })));
  }

  const server = await RedisServer.start();
  const rows: Record<string, string | number>[] = [];
  const results: Record<string, unknown> = { machine, layers: LAYERS, tokens: TOKENS, chunks: CHUNKS, sessions: SESSIONS, rounds: ROUNDS, ratio: RATIO };
  try {
    for (const [mode, data] of [['raw bf16', raw], ['kvtc', enc]] as const) {
      const tier = await RemoteTier.connect({ url: server.url, namespace: mode.replace(' ', '-') }, profile.fingerprint);
      const stored = data.reduce((s, cs) => s + cs.reduce((t, c) => t + c.blob.length, 0), 0);
      for (let s = 0; s < SESSIONS; s++) await tier.putSession(`s${s}`, Uint8Array.of(s), data[s]!);
      const sent = tier.stats().bytesSent;
      const getMs: number[] = [];
      const getDecodeMs: number[] = [];
      // Gets alone first, then gets each followed by the decode of its chunks (kvtc only), so
      // that the decodes' threads do not share the cores with the timed gets.
      for (const withDecode of mode === 'kvtc' ? [false, true] : [false]) {
        for (let r = 0; r < ROUNDS; r++) {
          for (let s = 0; s < SESSIONS; s++) {
            const t0 = performance.now();
            const g = await tier.getSession(`s${s}`);
            const t1 = performance.now();
            if (!g.ok) throw new Error(`${mode}: miss ${g.reason} ${g.detail ?? ''}`);
            if (!withDecode) {
              getMs.push(t1 - t0);
              continue;
            }
            await Promise.all(data[s]!.map((c) => decode(g.chunks.get(c.key)!, profile)));
            getDecodeMs.push(performance.now() - t0);
          }
        }
      }
      const st = tier.stats();
      const row = {
        mode,
        'stored MB': stored / 1e6,
        'put sent MB': sent / 1e6,
        'get recv MB/session': st.bytesReceived / st.gets / 1e6,
        'get p50 ms': pct(getMs, 50),
        'get p99 ms': pct(getMs, 99),
        'get+decode p50 ms': getDecodeMs.length ? pct(getDecodeMs, 50) : '-',
        'get+decode p99 ms': getDecodeMs.length ? pct(getDecodeMs, 99) : '-',
      };
      rows.push(row);
      results[mode] = { ...row, stats: st };
      await tier.close();
    }

    // Ceiling: bare GETs of the raw mode's chunk values (keys read back from the server).
    const bare = new Redis({ port: server.port, host: '127.0.0.1', enableAutoPipelining: true });
    const keys = await bare.keys('kvtc:*:raw-bf16:*:c:*');
    const perSession = Math.ceil(keys.length / SESSIONS);
    const bareMs: number[] = [];
    let bareBytes = 0;
    for (let r = 0; r < ROUNDS; r++) {
      for (let s = 0; s < SESSIONS; s++) {
        const t0 = performance.now();
        const vals = await Promise.all(keys.slice(s * perSession, (s + 1) * perSession).map((k) => bare.getBuffer(k)));
        bareMs.push(performance.now() - t0);
        for (const v of vals) bareBytes += v?.length ?? 0;
      }
    }
    // Ablation of the read path, interleaved on the same keys: GET pipelined with the renewal
    // script (what the tier does) against one script that reads and renews (value through Lua).
    bare.defineCommand('benchGetRenew', {
      numberOfKeys: 1,
      lua: "local v = redis.call('GET', KEYS[1]) if v then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end return v",
    });
    bare.defineCommand('benchRenew', { numberOfKeys: 1, lua: "return redis.call('PEXPIRE', KEYS[1], ARGV[1])" });
    const viaGet: number[] = [];
    const viaScript: number[] = [];
    const b = bare as unknown as { benchGetRenewBuffer(k: string, ms: number): Promise<Buffer>; benchRenew(k: string, ms: number): Promise<number> };
    for (let r = 0; r < ROUNDS; r++) {
      for (let s = 0; s < SESSIONS; s++) {
        const ks = keys.slice(s * perSession, (s + 1) * perSession);
        let t0 = performance.now();
        await Promise.all(ks.map((k) => Promise.all([bare.getBuffer(k), b.benchRenew(k, 86_400_000)])));
        viaGet.push(performance.now() - t0);
        t0 = performance.now();
        await Promise.all(ks.map((k) => b.benchGetRenewBuffer(k, 86_400_000)));
        viaScript.push(performance.now() - t0);
      }
    }
    bare.disconnect();
    for (const [mode, xs] of [['ablation: GET + renew script', viaGet], ['ablation: value through a script', viaScript]] as const) {
      const row = { mode, 'get p50 ms': pct(xs, 50), 'get p99 ms': pct(xs, 99) };
      rows.push(row);
      results[mode] = row;
    }
    const ceiling = { mode: 'ceiling: bare GET of raw', 'get recv MB/session': bareBytes / (ROUNDS * SESSIONS) / 1e6, 'get p50 ms': pct(bareMs, 50), 'get p99 ms': pct(bareMs, 99) };
    rows.push(ceiling);
    results.ceiling = ceiling;
  } finally {
    await server.stop();
  }

  const cols = [...new Set(rows.flatMap((r) => Object.keys(r)))];
  const fmt = (v: unknown): string => (v === undefined ? '' : typeof v === 'number' ? (v >= 100 ? v.toFixed(0) : v.toPrecision(3)) : String(v));
  const widths = cols.map((c) => Math.max(c.length, ...rows.map((r) => fmt(r[c]).length)));
  const line = (vals: string[]): string => `| ${vals.map((v, i) => v.padEnd(widths[i]!)).join(' | ')} |`;
  console.log(`\n${line(cols)}\n|${widths.map((w) => '-'.repeat(w + 2)).join('|')}|`);
  for (const r of rows) console.log(line(cols.map((c) => fmt(r[c]))));
  mkdirSync('bench/results', { recursive: true });
  writeFileSync('bench/results/remote.json', JSON.stringify({ date: new Date().toISOString(), ...results }, null, 2));
}

await main();
