/** A damaged disk record is a miss with a `corrupt` event — never wrong data, never a crash. */
import { beforeAll, describe, expect, it } from 'vitest';
import { open as openLmdb } from 'lmdb';
import { KvStore, type CodecProfile, type StoreEvent } from '../../src/index.js';
import { session, storeKit, tempDir, testProfile } from '../helpers/store.js';

let profile: CodecProfile;
const { defer } = storeKit();
beforeAll(async () => {
  profile = await testProfile();
});

/** Writes sessions a and b to disk, closes the store, then lets `damage` edit the LMDB records. */
async function damagedStore(damage: (blobs: ReturnType<typeof dbs>['blobs'], meta: ReturnType<typeof dbs>['meta']) => Promise<void>) {
  const t = await tempDir();
  defer(t.cleanup);
  const a = await KvStore.open({ profile, path: t.path });
  await a.put('a', session(1, 120));
  await a.put('b', session(2, 120));
  await a.evict('a', { to: 'disk' });
  await a.evict('b', { to: 'disk' });
  await a.close();
  const env = openLmdb<Uint8Array, Uint8Array>({ path: t.path, maxDbs: 8, noSubdir: false });
  const d = dbs(env);
  await damage(d.blobs, d.meta);
  await env.close();
  const store = await KvStore.open({ profile, path: t.path });
  defer(() => store.close().catch(() => undefined));
  const events: StoreEvent[] = [];
  store.on('corrupt', (e) => events.push(e));
  return { store, events };
}

function dbs(env: ReturnType<typeof openLmdb<Uint8Array, Uint8Array>>) {
  const o = { encoding: 'binary', keyEncoding: 'binary' } as const;
  return { blobs: env.openDB<Uint8Array, Uint8Array>('blobs', o), meta: env.openDB<Uint8Array, Uint8Array>('meta', o) };
}

const key = (id: string) => Buffer.from(id, 'utf8');

describe('corrupted disk records', () => {
  it('a flipped blob byte is a miss with a corrupt event; the record is taken out; others still serve', async () => {
    const { store, events } = await damagedStore(async (blobs) => {
      const b = Buffer.from(blobs.getBinary(key('a'))!);
      b[Math.floor(b.length / 2)]! ^= 0x10;
      await blobs.put(key('a'), b);
    });
    expect(store.has('a')).toBe('disk');
    expect(await store.get('a')).toBeUndefined();
    expect(events).toHaveLength(1);
    expect(events[0]).toMatchObject({ id: 'a', from: 'disk' });
    expect(store.has('a')).toBeUndefined();
    expect(store.stats().misses).toBe(1);
    expect((await store.get('b'))?.tokens).toBe(120);
  });

  it('a truncated blob, swapped blobs and a missing blob are all misses with corrupt events', async () => {
    const { store, events } = await damagedStore(async (blobs) => {
      const a = Buffer.from(blobs.getBinary(key('a'))!);
      const b = Buffer.from(blobs.getBinary(key('b'))!);
      await blobs.put(key('a'), b); // swapped: a's meta now points at b's data
      await blobs.put(key('b'), a.subarray(0, a.length - 7));
    });
    expect(await store.get('a')).toBeUndefined();
    expect(await store.get('b')).toBeUndefined();
    expect(events.map((e) => e.id).sort()).toEqual(['a', 'b']);
    expect(store.stats().disk.entries).toBe(0);
  });

  it('garbage metadata is a miss, not a crash', async () => {
    const { store, events } = await damagedStore(async (_blobs, meta) => {
      await meta.put(key('a'), Buffer.from('not a record'));
    });
    expect(store.has('a')).toBe('disk'); // known, but unreadable
    expect(await store.get('a')).toBeUndefined();
    expect(events.map((e) => e.id)).toEqual(['a']);
    expect(store.has('a')).toBeUndefined();
    expect((await store.get('b'))?.tokens).toBe(120);
  });

  it('a directory written with another profile is refused at open; opted in, its records are misses left untouched', async () => {
    const other = await (await import('../../src/index.js')).calibrate(
      [session(50, 300), session(51, 300)],
      { ratio: 4, windowTokens: 8, sinkTokens: 2 },
    );
    const t = await tempDir();
    defer(t.cleanup);
    const a = await KvStore.open({ profile: other, path: t.path });
    await a.put('x', session(3));
    await a.close();
    await expect(KvStore.open({ profile, path: t.path })).rejects.toMatchObject({ code: 'E_PROFILE_MISMATCH' });
    const store = await KvStore.open({ profile, path: t.path, foreignRecords: 'miss' });
    defer(() => store.close().catch(() => undefined));
    const events: StoreEvent[] = [];
    store.on('corrupt', (e) => events.push(e));
    store.on('miss', (e) => events.push(e));
    expect(store.has('x')).toBeUndefined();
    const status = {};
    expect(await store.getEntry('x', { status })).toBeUndefined();
    expect(status).toEqual({ result: 'miss', reason: 'profile-mismatch' });
    expect(events).toEqual([{ id: 'x', reason: 'profile-mismatch' }]);
    await store.close();
    // The record is still there for the profile that wrote it.
    const again = await KvStore.open({ profile: other, path: t.path });
    defer(() => again.close().catch(() => undefined));
    expect((await again.get('x'))?.tokens).toBe(64);
  });
});

describe('random damage to disk records', () => {
  it('every randomly damaged record is a miss with a corrupt event; undamaged ones decode exactly', async () => {
    const { mulberry32 } = await import('../helpers/synthetic.js');
    const { tokenBitsEqual } = await import('../helpers/metrics.js');
    const rand = mulberry32(31337);
    const t = await tempDir();
    defer(t.cleanup);
    const ids = Array.from({ length: 30 }, (_, i) => `r${i}`);
    const a = await KvStore.open({ profile, path: t.path });
    for (const [i, id] of ids.entries()) {
      await a.put(id, session(200 + i, 80));
      await a.evict(id, { to: 'disk' });
    }
    const expected = new Map<string, Awaited<ReturnType<KvStore['get']>>>();
    for (const id of ids) expected.set(id, await a.get(id, { promote: false }));
    await a.close();
    const env = openLmdb<Uint8Array, Uint8Array>({ path: t.path, maxDbs: 8, noSubdir: false });
    const d = dbs(env);
    const damaged = new Set<string>();
    for (const id of ids) {
      if (rand() < 0.4) continue; // leave some intact
      damaged.add(id);
      const db = rand() < 0.7 ? d.blobs : d.meta;
      const v = Buffer.from(db.getBinary(key(id))!);
      const kind = rand();
      if (kind < 0.6) v[Math.floor(rand() * v.length)]! ^= 1 << Math.floor(rand() * 8);
      else if (kind < 0.8) await db.put(key(id), v.subarray(0, Math.floor(rand() * v.length)));
      else await db.put(key(id), Buffer.concat([v, Buffer.from([1, 2, 3])]));
      if (kind < 0.6) await db.put(key(id), v);
    }
    await env.close();
    const store = await KvStore.open({ profile, path: t.path });
    defer(() => store.close().catch(() => undefined));
    const events: StoreEvent[] = [];
    store.on('corrupt', (e) => events.push(e));
    for (const id of ids) {
      const got = await store.get(id, { promote: false });
      if (damaged.has(id)) {
        expect(got, id).toBeUndefined();
      } else {
        const want = expected.get(id)!;
        for (let tk = 0; tk < want.tokens; tk++) expect(tokenBitsEqual(want, got!, tk)).toBe(true);
      }
    }
    expect(events.map((e) => e.id).sort()).toEqual([...damaged].sort());
    console.log(`[store-corrupt] ${damaged.size} damaged records refused, ${ids.length - damaged.size} intact ones exact`);
  });
});
