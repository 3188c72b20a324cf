/**
 * Kill -9: a child process works a write-through store and is SIGKILLed at random moments.
 * After each kill the store reopens, every session whose persisting operation had resolved is
 * found and decodes to exactly the bits it had, no record fails its checks, and the store serves.
 */
import { spawn } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { KvStore, calibrate, decode, encode, type CodecProfile, type KvCache } from '../../src/index.js';
import { DiskTier } from '../../src/store/disk-tier.js';
import { tokenBitsEqual } from '../helpers/metrics.js';
import { mulberry32 } from '../helpers/synthetic.js';
// @ts-expect-error plain JS fixture shared with the child process
import { fixtureCache, sharedFixture } from './fixture.mjs';

const CHILD = fileURLToPath(new URL('./crash-child.mjs', import.meta.url));
export const TRIALS = Number(process.env.KVTC_CRASH_TRIALS ?? 20);
let dir: string;
let profilePath: string;
let profile: CodecProfile;
const cache = fixtureCache as (seed: number) => KvCache;
const shared = (seed: number) => (sharedFixture as (seed: number) => { cache: KvCache; tokens: Int32Array })(seed).cache;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'kvtc-crash-'));
  profile = await calibrate([1001, 1002, 1003].map((s) => cache(s)), { ratio: 8, windowTokens: 8, sinkTokens: 2 });
  profilePath = join(dir, 'profile.kvtcp');
  await profile.save(profilePath);
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

/** Runs the child until it has acknowledged something and `killAfterMs` passed, then SIGKILLs it. */
function runAndKill(path: string, first: number, killAfterMs: number): Promise<string[]> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [CHILD, path, profilePath, String(first)], { stdio: ['ignore', 'pipe', 'pipe'] });
    const lines: string[] = [];
    let buf = '';
    let stderr = '';
    let timer: NodeJS.Timeout | undefined;
    child.stdout.on('data', (d: Buffer) => {
      buf += d.toString();
      const parts = buf.split('\n');
      buf = parts.pop()!;
      for (const l of parts) {
        lines.push(l);
        if (l === 'READY') timer = setTimeout(() => child.kill('SIGKILL'), killAfterMs);
      }
    });
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('exit', (code, signal) => {
      if (timer) clearTimeout(timer);
      if (signal === 'SIGKILL') resolve(lines);
      else reject(new Error(`child exited on its own (code ${code}): ${stderr}`));
    });
  });
}

describe('kill -9 during puts, evictions and spills (write-through)', () => {
  it(`every acknowledged session survives ${TRIALS} random kills bit-exactly; no record is corrupt`, async () => {
    const path = join(dir, 'store');
    const rand = mulberry32(20261129);
    const expected = new Map<string, number>(); // id -> seed of its acknowledged content
    const maybeDeleted = new Set<string>();
    let next = 0;
    let acks = 0;
    let verified = 0;
    let records = 0;
    let sharedRefs = 0;
    for (let trial = 0; trial < TRIALS; trial++) {
      const lines = await runAndKill(path, next, 100 + Math.floor(rand() * 500));
      const fresh = new Set<string>();
      for (const l of lines) {
        const [what, id, seed] = l.split(' ');
        if (what === 'ACK') {
          expected.set(id!, Number(seed));
          fresh.add(id!);
          maybeDeleted.delete(id!);
          next = Math.max(next, Number(seed) + 1);
          acks++;
        } else if (what === 'DELETING') maybeDeleted.add(id!);
        else if (what === 'DELETED') {
          expected.delete(id!);
          fresh.delete(id!);
          maybeDeleted.delete(id!);
        }
      }
      next += 1000; // a fresh id range: ids the killed child had started are never reused
      const store = await KvStore.open({ profile, path, chunkTokens: 16 });
      const corrupt: string[] = [];
      store.on('corrupt', (e) => corrupt.push(`${e.id}: ${e.reason}`));
      // Every session acknowledged by this child, and a sample of the older ones.
      const older = [...expected.keys()].filter((id) => !fresh.has(id));
      const sample = new Set([...fresh, ...Array.from({ length: Math.min(20, older.length) }, () => older[Math.floor(rand() * older.length)]!)]);
      for (const id of sample) {
        const seed = expected.get(id)!;
        if (maybeDeleted.has(id)) continue;
        verified++;
        const got = await store.get(id, { promote: false });
        expect(got, `${id} acknowledged before kill ${trial} is missing`).toBeDefined();
        const want = await decode(await encode(shared(seed), profile), profile);
        for (let t = 0; t < want.tokens; t++) expect(tokenBitsEqual(want, got!, t)).toBe(true);
      }
      // No acknowledged session was a miss.
      expect(store.stats().misses).toBe(0);
      // Sessions whose delete was interrupted: either gone or intact.
      for (const id of maybeDeleted) {
        const got = await store.get(id, { promote: false });
        if (got) expect(got.tokens).toBe(96);
      }
      // No record read failed its checks.
      expect(corrupt).toEqual([]);
      // And the store serves normally.
      await store.put(`probe-${trial}`, cache(5));
      expect((await store.get(`probe-${trial}`))?.tokens).toBe(96);
      await store.delete(`probe-${trial}`);
      await store.close();
      // Every record on disk, acknowledged or not, passes its checks (no torn writes).
      // Every chunk a manifest names is stored, and the references are exactly the manifests'.
      const disk = DiskTier.open({ path, capacityBytes: Number.MAX_SAFE_INTEGER, mapSizeBytes: 1 << 30 });
      expect(disk.unreadable()).toEqual([]);
      let refs = 0;
      const keys = new Set<string>();
      for (const m of disk.list()) {
        const r = disk.get(m.id, profile.fingerprint);
        expect(r.ok, `${m.id}: ${r.ok ? '' : r.reason}`).toBe(true);
        for (const c of m.chunks ?? []) {
          expect(disk.getChunk(c.key)?.byteLength, `chunk ${c.key} of ${m.id}`).toBe(c.bytes);
          keys.add(c.key);
          refs++;
        }
        records++;
      }
      expect(disk.totals()).toMatchObject({ chunkRefs: refs, chunks: keys.size });
      sharedRefs += refs - keys.size;
      await disk.close();
    }
    console.log(`[crash] ${TRIALS} SIGKILLs, ${acks} acknowledged sessions, ${verified} bit-exact checks and ${records} record checksums verified after restarts (${sharedRefs} shared chunk references seen), ${expected.size} sessions alive at the end`);
    expect(acks).toBeGreaterThan(TRIALS);
    expect(sharedRefs).toBeGreaterThan(0); // chunks were shared between sessions
  });
});
