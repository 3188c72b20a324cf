/**
 * The disk tier: round trips at every size class lmdb treats differently, exact accounting through
 * replace/delete/quarantine and restarts, LRU and TTL bookkeeping, every kind of on-disk damage
 * (made by editing the environment with the `lmdb` package directly) reported as 'corrupt' and
 * never as data, the mapSizeBytes limit, a real failed commit (file-size limit, in a child
 * process) and a property test of random put/delete/replace sequences, some of them concurrent.
 */
import { spawn } from 'node:child_process';
import { randomFillSync } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { fileURLToPath, pathToFileURL } from 'node:url';
import fc from 'fast-check';
import { open as openLmdb } from 'lmdb';
import type { Database } from 'lmdb';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { native } from '../../src/binding.js';
import { KvtcError } from '../../src/errors.js';
import type { KvLayout } from '../../src/layout.js';
import { DiskTier, MAX_ID_BYTES } from '../../src/store/disk-tier.js';
import type { DiskGetResult, DiskPutMeta, DiskRecordMeta } from '../../src/store/disk-tier.js';

const REPO = fileURLToPath(new URL('../../', import.meta.url));
const FP = '0123456789abcdef0123456789abcdef';
const FP2 = 'fedcba9876543210fedcba9876543210';
const MB = 1024 * 1024;

const LAYOUT: KvLayout = {
  layers: 4,
  kvHeads: 2,
  headDim: 16,
  dtype: 'f16',
  // Values that are not short decimals, to prove the float32 bits survive.
  rope: { theta: 500000, style: 'neox', dims: 8, freqs: new Float32Array([1, 1 / 3, -0, 1e-40]) },
};

let dir = '';
let tiers: DiskTier[] = [];

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'kvtc-disk-'));
  tiers = [];
});

afterEach(async () => {
  for (const t of tiers) await t.close();
  await rm(dir, { recursive: true, force: true });
});

function openTier(opts: Partial<{ path: string; capacityBytes: number; mapSizeBytes: number }> = {}): DiskTier {
  const t = DiskTier.open({ path: opts.path ?? join(dir, 'env'), capacityBytes: opts.capacityBytes ?? 64 * MB, mapSizeBytes: opts.mapSizeBytes ?? 256 * MB });
  tiers.push(t);
  return t;
}

function putMeta(id: string, over: Partial<DiskPutMeta> = {}): DiskPutMeta {
  return {
    id,
    fingerprint: FP,
    layout: LAYOUT,
    tokens: 123,
    rawBytes: 123 * 4 * 2 * 2 * 16 * 2,
    createdAt: 1_700_000_000_000,
    lastAccess: 1_700_000_000_000,
    ttlMs: 0,
    priority: 1,
    pinned: false,
    format: 'kvtc',
    ...over,
  };
}

function randomBlob(n: number): Uint8Array {
  return randomFillSync(new Uint8Array(n));
}

function expectOk(r: DiskGetResult): { meta: DiskRecordMeta; blob: Uint8Array } {
  if (!r.ok) throw new Error(`expected ok, got ${r.reason}${'detail' in r ? `: ${r.detail}` : ''}`);
  return r;
}

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  return Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(Buffer.from(b.buffer, b.byteOffset, b.byteLength));
}

async function rejection(p: Promise<unknown>): Promise<KvtcError> {
  try {
    await p;
  } catch (err) {
    expect(err).toBeInstanceOf(KvtcError);
    return err as KvtcError;
  }
  throw new Error('expected a rejection');
}

/** Opens the tier's environment with the plain lmdb package (tier closed) and lets `edit` damage it. */
async function editRaw(path: string, edit: (dbs: { meta: Database<Uint8Array, Uint8Array>; blobs: Database<Uint8Array, Uint8Array> }) => void): Promise<void> {
  const env = openLmdb<Uint8Array, Uint8Array>({ path, maxDbs: 8 });
  const o = { encoding: 'binary', keyEncoding: 'binary' } as const;
  edit({ meta: env.openDB<Uint8Array, Uint8Array>('meta', o), blobs: env.openDB<Uint8Array, Uint8Array>('blobs', o) });
  await env.close();
}

const key = (id: string): Buffer => Buffer.from(id, 'utf8');

describe('DiskTier basics', () => {
  it('round-trips blobs from 0 B to 3 MB with every metadata field', async () => {
    const t = openTier();
    const sizes = [0, 1, 100, 4095, 4096, 4097, 32768, 32769, 100_000, 1 * MB, 3 * MB];
    for (let i = 0; i < 4; i++) sizes.push(Math.floor(Math.random() * 2 * MB));
    const blobs = new Map<string, Uint8Array>();
    for (const [i, size] of sizes.entries()) {
      const id = `s${i}-${size}`;
      const blob = randomBlob(size);
      const stored = await t.put(putMeta(id, { tokens: i, priority: 10 - i, pinned: i % 2 === 0, ttlMs: i * 1000, format: i % 3 ? 'kvtc' : 'raw', lastAccess: 1_700_000_000_000 + i }), blob);
      expect(stored.storedBytes).toBe(size);
      expect(stored.checksum).toBe(native.crc32c(blob) >>> 0);
      blobs.set(id, blob);
    }
    expect(t.count).toBe(sizes.length);
    expect(t.bytes).toBe(sizes.reduce((a, b) => a + b, 0));
    const reads = new Map<string, Uint8Array>();
    for (const [i, size] of sizes.entries()) {
      const id = `s${i}-${size}`;
      const { meta, blob } = expectOk(t.get(id, FP, 0));
      expect(Object.getPrototypeOf(blob)).toBe(Uint8Array.prototype);
      expect(blob.byteLength).toBe(size);
      expect(sameBytes(blob, blobs.get(id)!)).toBe(true);
      expect(meta).toEqual({
        id, fingerprint: FP, layout: LAYOUT, tokens: i, rawBytes: 123 * 4 * 2 * 2 * 16 * 2, storedBytes: size,
        createdAt: 1_700_000_000_000, lastAccess: 1_700_000_000_000 + i, ttlMs: i * 1000, priority: 10 - i,
        pinned: i % 2 === 0, checksum: native.crc32c(blobs.get(id)!) >>> 0, format: i % 3 ? 'kvtc' : 'raw',
      });
      expect(meta.layout.rope?.freqs).toBeInstanceOf(Float32Array);
      // Bit-exact, -0 and a subnormal included.
      expect(Buffer.from(meta.layout.rope!.freqs!.buffer).equals(Buffer.from(LAYOUT.rope!.freqs!.buffer))).toBe(true);
      reads.set(id, blob);
    }
    // Every read returned memory of its own: later reads (same size classes) did not overwrite it,
    // and scribbling on one result does not reach the store.
    for (const [id, blob] of reads) expect(sameBytes(blob, blobs.get(id)!)).toBe(true);
    for (const blob of reads.values()) blob.fill(0xee);
    for (const id of reads.keys()) expect(sameBytes(expectOk(t.get(id, FP, 0)).blob, blobs.get(id)!)).toBe(true);
  });

  it('replaces a record and adjusts the accounting', async () => {
    const t = openTier();
    await t.put(putMeta('a'), randomBlob(1000));
    await t.put(putMeta('b'), randomBlob(300));
    const second = randomBlob(50_000);
    await t.put(putMeta('a', { fingerprint: FP2, tokens: 7 }), second);
    expect(t.count).toBe(2);
    expect(t.bytes).toBe(50_300);
    const got = expectOk(t.get('a', FP2));
    expect(sameBytes(got.blob, second)).toBe(true);
    expect(got.meta.tokens).toBe(7);
    expect(t.get('a', FP)).toMatchObject({ ok: false, reason: 'profile-mismatch' });
    // Shrinking again.
    await t.put(putMeta('a'), randomBlob(10));
    expect(t.bytes).toBe(310);
  });

  it('deletes records, and has/meta/list follow', async () => {
    const t = openTier();
    await t.put(putMeta('a'), randomBlob(10));
    await t.put(putMeta('b'), randomBlob(20));
    expect(t.has('a')).toBe(true);
    expect(t.meta('a')?.storedBytes).toBe(10);
    expect(t.list().map((m) => m.id).sort()).toEqual(['a', 'b']);
    expect(await t.delete('a')).toBe(true);
    expect(await t.delete('a')).toBe(false);
    expect(await t.delete('never')).toBe(false);
    expect(await t.delete('')).toBe(false);
    expect(t.has('a')).toBe(false);
    expect(t.meta('a')).toBeUndefined();
    expect(t.get('a', FP)).toEqual({ ok: false, reason: 'missing' });
    expect(t.list().map((m) => m.id)).toEqual(['b']);
    expect(t.count).toBe(1);
    expect(t.bytes).toBe(20);
    // meta() and list() hand out copies.
    const m = t.meta('b')!;
    m.storedBytes = 999;
    m.layout.rope!.freqs![0] = 42;
    expect(t.meta('b')?.storedBytes).toBe(20);
    expect(t.meta('b')?.layout.rope?.freqs?.[0]).toBe(1);
  });

  it('applies concurrent writes in call order', async () => {
    // lmdb runs transaction callbacks ahead of batched writes queued before them; the tier must not.
    const t = openTier();
    const results = await Promise.all([
      t.put(putMeta('a'), randomBlob(10)).then(() => 'put'),
      t.delete('a'),
      t.put(putMeta('a'), randomBlob(20)).then(() => 'put'),
      t.delete('a'),
      t.put(putMeta('a'), randomBlob(30)).then(() => 'put'),
      t.quarantine('a', 'why'),
      t.put(putMeta('a'), randomBlob(40)).then(() => 'put'),
    ]);
    expect(results).toEqual(['put', true, 'put', true, 'put', undefined, 'put']);
    expect(t.quarantined()).toMatchObject([{ id: 'a', reason: 'why', blobBytes: 30 }]);
    expect(expectOk(t.get('a', FP)).blob.byteLength).toBe(40);
    expect(t.bytes).toBe(40);
  });

  it('copies large blobs off the event loop', async () => {
    const t = openTier({ mapSizeBytes: 512 * MB });
    const blob = new Uint8Array(128 * MB);
    for (let i = 0; i < blob.length; i += 4093) blob[i] = i & 0xff;
    const h = monitorEventLoopDelay({ resolution: 1 });
    h.enable();
    await t.put(putMeta('big'), blob);
    h.disable();
    // Only the CRC-32C (~20 ms) runs on this thread; copying 128 MB into LMDB's pages on it took
    // ~240 ms. The bound leaves room for a loaded machine.
    expect(h.max / 1e6).toBeLessThan(300); // still below the ~370 ms a main-thread copy costs
    expect(sameBytes(expectOk(t.get('big', FP)).blob, blob)).toBe(true);
  });

  it('finds every record again after a restart (warm restart), lastAccess included', async () => {
    const path = join(dir, 'warm');
    const t = openTier({ path });
    const blobs = new Map<string, Uint8Array>();
    for (let i = 0; i < 12; i++) {
      const b = randomBlob(1000 * i * i);
      blobs.set(`w${i}`, b);
      await t.put(putMeta(`w${i}`, { lastAccess: 1000 + i }), b);
    }
    await t.delete('w3');
    blobs.delete('w3');
    t.touch('w0', 5000);
    const before = { list: t.list(), bytes: t.bytes, count: t.count, lru: t.lruOrder() };
    await t.close();
    expect(() => t.get('w1', FP)).toThrow(expect.objectContaining({ code: 'E_CLOSED' }) as Error);
    await expect(t.put(putMeta('x'), randomBlob(1))).rejects.toMatchObject({ code: 'E_CLOSED' });

    const again = openTier({ path });
    expect(again.count).toBe(before.count);
    expect(again.bytes).toBe(before.bytes);
    const sortById = (l: DiskRecordMeta[]): DiskRecordMeta[] => [...l].sort((a, b) => a.id.localeCompare(b.id));
    expect(sortById(again.list())).toEqual(sortById(before.list));
    expect(again.meta('w0')?.lastAccess).toBe(5000);
    expect(again.lruOrder()).toEqual(before.lru);
    for (const [id, b] of blobs) expect(sameBytes(expectOk(again.get(id, FP, 0)).blob, b)).toBe(true);
  });

  it('persists touches lazily, without close', async () => {
    const path = join(dir, 'lazy');
    const t = openTier({ path });
    await t.put(putMeta('a', { lastAccess: 10 }), randomBlob(10));
    t.touch('a', 20);
    const onDisk = async (): Promise<number> => {
      // Read the record the way a restarted process would, through lmdb directly (lmdb shares
      // the open environment and counts references, so closing this handle leaves the tier's).
      const env = openLmdb<Uint8Array, Uint8Array>({ path, maxDbs: 8 });
      const raw = env.openDB<Uint8Array, Uint8Array>('meta', { encoding: 'binary', keyEncoding: 'binary' }).getBinary(key('a'))!;
      await env.close();
      return (JSON.parse(Buffer.from(raw).subarray(5).toString('utf8')) as DiskRecordMeta).lastAccess;
    };
    expect(await onDisk()).toBe(10);
    expect(t.meta('a')?.lastAccess).toBe(20);
    await new Promise((r) => setTimeout(r, 1300));
    expect(await onDisk()).toBe(20);
    expect(expectOk(t.get('a', FP)).meta.lastAccess).toBe(20);
  });

  it('orders ids least recently used first, pinned ones excluded', async () => {
    const t = openTier();
    for (const [i, id] of ['a', 'b', 'c', 'd', 'e'].entries()) {
      await t.put(putMeta(id, { lastAccess: 100 + i, pinned: id === 'd' }), randomBlob(5));
    }
    expect(t.lruOrder()).toEqual(['a', 'b', 'c', 'e']);
    t.touch('a', 200);
    t.touch('c', 201);
    expect(t.lruOrder()).toEqual(['b', 'e', 'a', 'c']);
    // An access older than the newest one (clock skew, replayed touch) still lands in time order.
    t.touch('c', 150);
    expect(t.lruOrder()).toEqual(['b', 'e', 'c', 'a']);
    t.touch('unknown', 300); // ignored
    expect(() => t.touch('a', Number.NaN)).toThrow(expect.objectContaining({ code: 'E_OPTIONS' }) as Error);
    // A put is an access too.
    await t.put(putMeta('b', { lastAccess: 400 }), randomBlob(5));
    expect(t.lruOrder()).toEqual(['e', 'c', 'a', 'b']);
    await t.delete('e');
    expect(t.lruOrder()).toEqual(['c', 'a', 'b']);
  });

  it('expires records at lastAccess + ttlMs', async () => {
    const t = openTier();
    await t.put(putMeta('ttl', { lastAccess: 5000, ttlMs: 1000 }), randomBlob(10));
    await t.put(putMeta('forever', { lastAccess: 0, ttlMs: 0 }), randomBlob(10));
    await t.put(putMeta('pinned', { lastAccess: 5000, ttlMs: 10, pinned: true }), randomBlob(10));
    expect(t.expired(5000)).toEqual([]);
    expect(t.expired(5999).sort()).toEqual(['pinned']);
    expect(t.expired(6000).sort()).toEqual(['pinned', 'ttl']);
    expect(expectOk(t.get('ttl', FP, 5999)).meta.id).toBe('ttl');
    const r = t.get('ttl', FP, 6000);
    expect(r).toMatchObject({ ok: false, reason: 'expired', meta: { id: 'ttl' } });
    expect(t.get('forever', FP, Number.MAX_SAFE_INTEGER).ok).toBe(true);
    // Touching extends the TTL.
    t.touch('ttl', 5500);
    expect(t.expired(6000).sort()).toEqual(['pinned']);
    expect(t.get('ttl', FP, 6000).ok).toBe(true);
    expect(t.get('ttl', FP, 6500)).toMatchObject({ ok: false, reason: 'expired' });
  });

  it('reports a profile mismatch with the record metadata', async () => {
    const t = openTier();
    await t.put(putMeta('p'), randomBlob(100));
    const r = t.get('p', FP2);
    expect(r).toMatchObject({ ok: false, reason: 'profile-mismatch', meta: { fingerprint: FP } });
    if (!r.ok && r.reason !== 'missing') expect(r.detail).toContain(FP2);
  });

  it('validates ids: empty and over-long refused, unicode accepted', async () => {
    const path = join(dir, 'ids');
    const t = openTier({ path });
    expect((await rejection(t.put(putMeta(''), randomBlob(1)))).code).toBe('E_OPTIONS');
    const long = await rejection(t.put(putMeta('x'.repeat(MAX_ID_BYTES + 1)), randomBlob(1)));
    expect(long.code).toBe('E_OPTIONS');
    expect(long.message).toContain(String(MAX_ID_BYTES + 1));
    // 990 characters but 1980 bytes of UTF-8.
    const wide = await rejection(t.put(putMeta('é'.repeat(990)), randomBlob(1)));
    expect(wide.code).toBe('E_OPTIONS');
    expect(wide.message).toContain('1980');
    expect((await rejection(t.put(putMeta('bad\ud800'), randomBlob(1)))).code).toBe('E_OPTIONS');
    expect(t.count).toBe(0);

    const ids = ['x'.repeat(MAX_ID_BYTES), 'é'.repeat(950), '会話-🙂-ñ', 'tab\tnew\nline', ' '];
    for (const id of ids) await t.put(putMeta(id), randomBlob(33));
    for (const id of ids) expect(expectOk(t.get(id, FP)).meta.id).toBe(id);
    expect(t.get('x'.repeat(MAX_ID_BYTES + 1), FP)).toEqual({ ok: false, reason: 'missing' });
    await t.close();
    const again = openTier({ path });
    expect(again.list().map((m) => m.id).sort()).toEqual([...ids].sort());
  });

  it('validates metadata, blob and options', async () => {
    const t = openTier();
    const code = async (m: DiskPutMeta, blob: unknown = randomBlob(1)): Promise<string> => (await rejection(t.put(m, blob as Uint8Array))).code;
    expect(await code(putMeta('m', { fingerprint: 'ABC' }))).toBe('E_OPTIONS');
    expect(await code(putMeta('m', { tokens: -1 }))).toBe('E_OPTIONS');
    expect(await code(putMeta('m', { ttlMs: -5 }))).toBe('E_OPTIONS');
    expect(await code(putMeta('m', { lastAccess: Number.NaN }))).toBe('E_OPTIONS');
    expect(await code(putMeta('m', { format: 'zip' as 'raw' }))).toBe('E_OPTIONS');
    expect(await code(putMeta('m', { layout: { ...LAYOUT, headDim: 0 } }))).toBe('E_LAYOUT');
    expect(await code(putMeta('m'), [1, 2, 3])).toBe('E_OPTIONS');
    expect(t.count).toBe(0);
    for (const bad of [
      { path: '', capacityBytes: 1, mapSizeBytes: MB },
      { path: join(dir, 'o'), capacityBytes: -1, mapSizeBytes: MB },
      { path: join(dir, 'o'), capacityBytes: 1, mapSizeBytes: 1000 },
    ]) {
      expect(() => DiskTier.open(bad)).toThrow(expect.objectContaining({ code: 'E_OPTIONS' }) as Error);
    }
    expect(t.capacityBytes).toBe(64 * MB);
  });
});

describe('DiskTier damage', () => {
  type Damage = { name: string; edit: Parameters<typeof editRaw>[1]; alsoCorrupt?: string[]; expectUnreadable?: boolean };
  const damages: Damage[] = [
    {
      name: 'a flipped byte in the blob',
      edit: ({ blobs }) => {
        const b = Buffer.from(blobs.getBinary(key('victim'))!);
        b[b.length >> 1]! ^= 0x10;
        blobs.putSync(key('victim'), b);
      },
    },
    {
      name: 'a truncated blob',
      edit: ({ blobs }) => blobs.putSync(key('victim'), Buffer.from(blobs.getBinary(key('victim'))!).subarray(0, 1000)),
    },
    {
      name: 'the blobs of two records swapped',
      edit: ({ blobs }) => {
        const a = Buffer.from(blobs.getBinary(key('victim'))!);
        const b = Buffer.from(blobs.getBinary(key('other'))!);
        blobs.putSync(key('victim'), b);
        blobs.putSync(key('other'), a);
      },
      alsoCorrupt: ['other'],
    },
    { name: 'the blob deleted', edit: ({ blobs }) => blobs.removeSync(key('victim')) },
    { name: 'garbage metadata', edit: ({ meta }) => meta.putSync(key('victim'), randomBlob(300)), expectUnreadable: true },
    {
      name: 'a flipped byte in the metadata',
      edit: ({ meta }) => {
        const m = Buffer.from(meta.getBinary(key('victim'))!);
        m[m.length - 20]! ^= 0x01;
        meta.putSync(key('victim'), m);
      },
      expectUnreadable: true,
    },
    {
      name: "another record's metadata",
      edit: ({ meta }) => meta.putSync(key('victim'), Buffer.from(meta.getBinary(key('other'))!)),
      expectUnreadable: true,
    },
    { name: 'the metadata deleted (blob left)', edit: ({ meta }) => meta.removeSync(key('victim')), expectUnreadable: true },
    {
      name: 'well-framed metadata with a field of the wrong type',
      edit: ({ meta }) => {
        const m = JSON.parse(Buffer.from(meta.getBinary(key('victim'))!).subarray(5).toString('utf8')) as Record<string, unknown>;
        m['storedBytes'] = '40000';
        const json = Buffer.from(JSON.stringify(m));
        const framed = Buffer.alloc(5 + json.length);
        framed[0] = 1;
        framed.writeUInt32LE(native.crc32c(json) >>> 0, 1);
        json.copy(framed, 5);
        meta.putSync(key('victim'), framed);
      },
      expectUnreadable: true,
    },
  ];

  for (const d of damages) {
    it(`reports ${d.name} as corrupt, never as data, and quarantines it`, async () => {
      const path = join(dir, 'dmg');
      const t = openTier({ path });
      const victim = randomBlob(40_000);
      const other = randomBlob(60_000);
      const keep = randomBlob(5_000);
      await t.put(putMeta('victim'), victim);
      await t.put(putMeta('other'), other);
      await t.put(putMeta('keep'), keep);
      await t.close();
      await editRaw(path, d.edit);

      const again = openTier({ path });
      expect(again.count).toBe(3);
      expect(again.unreadable()).toEqual(d.expectUnreadable ? ['victim'] : []);
      if (d.expectUnreadable) expect(again.lruOrder()[0]).toBe('victim');
      const corrupt = ['victim', ...(d.alsoCorrupt ?? [])];
      for (const id of corrupt) {
        for (const fp of [FP, FP2]) {
          const r = again.get(id, fp);
          expect(r.ok).toBe(false);
          // A damaged record may not even know its fingerprint; with intact metadata the
          // fingerprint is checked first, so only the expected one reaches the blob checks.
          if (fp === FP || d.expectUnreadable) expect(r).toMatchObject({ ok: false, reason: 'corrupt' });
        }
      }
      const bytesBefore = again.bytes;
      const victimBytes = again.meta('victim')?.storedBytes ?? (bytesBefore - 60_000 - 5_000);
      await again.quarantine('victim', 'test damage');
      expect(again.count).toBe(2);
      expect(again.bytes).toBe(bytesBefore - victimBytes);
      expect(again.has('victim')).toBe(false);
      expect(again.list().map((m) => m.id)).not.toContain('victim');
      expect(again.lruOrder()).not.toContain('victim');
      expect(again.get('victim', FP)).toEqual({ ok: false, reason: 'missing' });
      expect(again.quarantined()).toMatchObject([{ id: 'victim', reason: 'test damage' }]);
      expect(again.bytes).toBe(again.list().reduce((s, m) => s + m.storedBytes, 0));
      expect(sameBytes(expectOk(again.get('keep', FP)).blob, keep)).toBe(true);
      if (!d.alsoCorrupt) expect(sameBytes(expectOk(again.get('other', FP)).blob, other)).toBe(true);

      // The quarantine survives a restart outside the live set, and can be cleared.
      await again.close();
      const third = openTier({ path });
      expect(third.count).toBe(2);
      expect(third.quarantined().map((q) => q.id)).toEqual(['victim']);
      expect(await third.clearQuarantine()).toBe(1);
      expect(third.quarantined()).toEqual([]);
      // The id is free for a clean record again.
      await third.put(putMeta('victim'), victim);
      expect(third.count).toBe(3);
      expect(sameBytes(expectOk(third.get('victim', FP)).blob, victim)).toBe(true);
    });
  }

  it('quarantine of an unknown id is a no-op', async () => {
    const t = openTier();
    await t.put(putMeta('a'), randomBlob(10));
    await t.quarantine('nope', 'x');
    expect(t.count).toBe(1);
    expect(t.quarantined()).toEqual([]);
  });
});

describe('DiskTier capacity', () => {
  it('refuses puts over mapSizeBytes with E_CAPACITY and changes nothing', async () => {
    const t = openTier({ mapSizeBytes: 2 * MB });
    const stored = new Map<string, Uint8Array>();
    let failure: KvtcError | undefined;
    for (let i = 0; i < 50 && !failure; i++) {
      const blob = randomBlob(300_000);
      const before = { bytes: t.bytes, count: t.count };
      try {
        await t.put(putMeta(`r${i}`), blob);
        stored.set(`r${i}`, blob);
      } catch (err) {
        failure = err as KvtcError;
        expect({ bytes: t.bytes, count: t.count }).toEqual(before);
        expect(t.has(`r${i}`)).toBe(false);
        expect(t.get(`r${i}`, FP)).toEqual({ ok: false, reason: 'missing' });
      }
    }
    expect(failure).toBeInstanceOf(KvtcError);
    expect(failure?.code).toBe('E_CAPACITY');
    expect(stored.size).toBeGreaterThanOrEqual(4);
    expect(t.usage().pageBytes).toBeLessThanOrEqual(2 * MB);

    // A replacement that does not fit leaves the old record.
    const bytes = t.bytes;
    expect((await rejection(t.put(putMeta('r0'), randomBlob(1.5 * MB)))).code).toBe('E_CAPACITY');
    expect(t.bytes).toBe(bytes);
    expect((await rejection(t.put(putMeta('huge'), randomBlob(3 * MB)))).code).toBe('E_CAPACITY');
    for (const [id, b] of stored) expect(sameBytes(expectOk(t.get(id, FP)).blob, b)).toBe(true);

    // Deleting makes room again (the limit counts pages in use, not the file's high-water mark).
    await t.delete('r0');
    await t.delete('r1');
    await t.put(putMeta('again'), randomBlob(300_000));
    expect(t.count).toBe(stored.size - 1);

    // Puts waiting in the write queue count against the limit: of many at once, only what fits.
    await t.delete('again');
    for (const id of [...stored.keys()].slice(2)) await t.delete(id);
    expect(t.count).toBe(0);
    const settled = await Promise.allSettled(Array.from({ length: 12 }, (_, i) => t.put(putMeta(`c${i}`), randomBlob(300_000))));
    const ok = settled.filter((r) => r.status === 'fulfilled').length;
    expect(ok).toBeGreaterThanOrEqual(4);
    expect(ok).toBeLessThan(12);
    for (const r of settled) if (r.status === 'rejected') expect(r.reason).toMatchObject({ code: 'E_CAPACITY' });
    expect(t.count).toBe(ok);
    expect(t.bytes).toBe(ok * 300_000);
    expect(t.usage().pageBytes).toBeLessThanOrEqual(2 * MB);
    // Let any stray rejection surface inside this test (vitest fails the run on one).
    await new Promise((r) => setTimeout(r, 50));
  });

  it.runIf(process.platform === 'linux')('turns a failed commit (file-size limit) into E_CAPACITY without an unhandled rejection', async () => {
    const script = join(dir, 'child.mts');
    const data = join(dir, 'limited');
    const modUrl = pathToFileURL(join(REPO, 'src/store/disk-tier.ts')).href;
    await writeFile(script, `
import { DiskTier } from ${JSON.stringify(modUrl)};
let unhandled = 0;
process.on('unhandledRejection', () => { unhandled++; });
const fp = ${JSON.stringify(FP)};
const layout = { layers: 1, kvHeads: 1, headDim: 8, dtype: 'f32' };
const meta = (id) => ({ id, fingerprint: fp, layout, tokens: 1, rawBytes: 64, createdAt: 1, lastAccess: 1, ttlMs: 0, priority: 0, pinned: false, format: 'raw' });
const out = { stored: 0, failCode: null, failMessage: null, changed: true, replaceCode: null, intact: 0, reopenCount: -1, reopenBytes: -1, bytes: -1, unhandled: 0 };
const tier = DiskTier.open({ path: process.argv[2], capacityBytes: 1 << 30, mapSizeBytes: 1 << 30 });
for (let i = 0; i < 100; i++) {
  const before = tier.bytes + ':' + tier.count;
  try { await tier.put(meta('r' + i), new Uint8Array(256 * 1024).fill(i + 1)); out.stored++; }
  catch (e) { out.failCode = e.code; out.failMessage = e.message; out.changed = before !== tier.bytes + ':' + tier.count; break; }
}
try { await tier.put(meta('r0'), new Uint8Array(1 << 20).fill(200)); } catch (e) { out.replaceCode = e.code; }
await new Promise((r) => setTimeout(r, 300));
for (let i = 0; i < out.stored; i++) { const g = tier.get('r' + i, fp); if (g.ok && g.blob.length === 256 * 1024 && g.blob.every((b) => b === i + 1)) out.intact++; }
out.bytes = tier.bytes;
await tier.close();
const again = DiskTier.open({ path: process.argv[2], capacityBytes: 1 << 30, mapSizeBytes: 1 << 30 });
out.reopenCount = again.count; out.reopenBytes = again.bytes;
await again.close();
await new Promise((r) => setTimeout(r, 100));
out.unhandled = unhandled;
console.log('RESULT ' + JSON.stringify(out));
`);
    // 2 MiB file-size limit (bash counts 1024-byte blocks); Node ignores SIGXFSZ, so the write fails.
    const res = await new Promise<{ stdout: string; stderr: string; code: number | null }>((resolve, reject) => {
      const child = spawn('bash', ['-c', 'ulimit -f 2048 && exec "$0" --import tsx "$1" "$2"', process.execPath, script, data], { cwd: REPO, stdio: ['ignore', 'pipe', 'pipe'] });
      let stdout = '';
      let stderr = '';
      child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
      child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr = (stderr + d).slice(-4000)));
      child.on('error', reject);
      child.on('close', (code) => resolve({ stdout, stderr, code }));
    });
    const line = res.stdout.split('\n').find((l) => l.startsWith('RESULT '));
    expect(line, `child failed (code ${res.code}): ${res.stderr}`).toBeDefined();
    const out = JSON.parse(line!.slice(7)) as Record<string, unknown>;
    expect(out['failCode']).toBe('E_CAPACITY');
    expect(out['changed']).toBe(false);
    expect(out['replaceCode']).toBe('E_CAPACITY');
    expect(out['stored']).toBeGreaterThanOrEqual(3);
    expect(out['intact']).toBe(out['stored']);
    expect(out['bytes']).toBe((out['stored'] as number) * 256 * 1024);
    expect(out['reopenCount']).toBe(out['stored']);
    expect(out['reopenBytes']).toBe(out['bytes']);
    expect(out['unhandled']).toBe(0);
  });
});

describe('DiskTier property', () => {
  type Op = { kind: 'put'; id: string; size: number; wait: boolean } | { kind: 'del'; id: string; wait: boolean };
  const ids = ['a', 'b', 'c', 'd', 'e', 'ü-6'];
  const op: fc.Arbitrary<Op> = fc.oneof(
    { weight: 3, arbitrary: fc.record({ kind: fc.constant('put' as const), id: fc.constantFrom(...ids), size: fc.oneof(fc.integer({ min: 0, max: 64 }), fc.integer({ min: 0, max: 40_000 })), wait: fc.boolean() }) },
    { weight: 1, arbitrary: fc.record({ kind: fc.constant('del' as const), id: fc.constantFrom(...ids), wait: fc.boolean() }) },
  );

  it('keeps bytes = sum of storedBytes and every record readable as last written', async () => {
    let run = 0;
    await fc.assert(
      fc.asyncProperty(fc.array(op, { minLength: 20, maxLength: 50 }), async (ops) => {
        const path = join(dir, `prop${run++}`);
        const t = DiskTier.open({ path, capacityBytes: 64 * MB, mapSizeBytes: 64 * MB });
        try {
          const model = new Map<string, Uint8Array>();
          let pending: Promise<unknown>[] = [];
          let n = 0;
          for (const o of ops) {
            // Operations not waited for run concurrently; the model applies them in call order.
            if (o.kind === 'put') {
              const blob = randomBlob(o.size);
              model.set(o.id, blob);
              pending.push(t.put(putMeta(o.id, { lastAccess: n++ }), blob));
            } else {
              const existed = model.delete(o.id);
              pending.push(t.delete(o.id).then((r) => expect(r).toBe(existed)));
            }
            if (o.wait) {
              await Promise.all(pending);
              pending = [];
            }
          }
          await Promise.all(pending);
          const check = (tier: DiskTier): void => {
            const list = tier.list();
            expect(tier.bytes).toBe(list.reduce((s, m) => s + m.storedBytes, 0));
            expect(tier.bytes).toBe([...model.values()].reduce((s, b) => s + b.byteLength, 0));
            expect(tier.count).toBe(model.size);
            expect(list.map((m) => m.id).sort()).toEqual([...model.keys()].sort());
            for (const id of ids) {
              const r = tier.get(id, FP);
              const want = model.get(id);
              if (want) expect(sameBytes(expectOk(r).blob, want)).toBe(true);
              else expect(r).toEqual({ ok: false, reason: 'missing' });
            }
          };
          check(t);
          await t.close();
          const again = DiskTier.open({ path, capacityBytes: 64 * MB, mapSizeBytes: 64 * MB });
          try {
            check(again);
          } finally {
            await again.close();
          }
        } finally {
          await t.close();
          await rm(path, { recursive: true, force: true });
        }
      }),
      { numRuns: 30 },
    );
  });
});

describe('DiskTier putMany', () => {
  it('writes many records in one transaction, all or none', async () => {
    const t = openTier({ path: join(dir, 'many'), mapSizeBytes: 256 * 1024 });
    const items = ['m1', 'm2', 'm3'].map((id, i) => ({ meta: putMeta(id), blob: randomBlob(1000 + i) }));
    const stored = await t.putMany(items);
    expect(stored.map((m) => m.storedBytes)).toEqual([1000, 1001, 1002]);
    for (const id of ['m1', 'm2', 'm3']) expect(t.get(id, FP).ok).toBe(true);
    await expect(t.putMany([{ meta: putMeta('d'), blob: randomBlob(1) }, { meta: putMeta('d'), blob: randomBlob(2) }])).rejects.toMatchObject({ code: 'E_OPTIONS' });
    // Too much together: refused before writing, nothing of it lands.
    const big = Array.from({ length: 8 }, (_, i) => ({ meta: putMeta(`b${i}`), blob: randomBlob(40_000) }));
    await expect(t.putMany(big)).rejects.toMatchObject({ code: 'E_CAPACITY' });
    expect(t.has('b0')).toBe(false);
    expect(t.count).toBe(3);
    await t.close();
  });
});
