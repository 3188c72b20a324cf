/**
 * The store with a shared remote tier (a real redis-server on loopback): a session put and demoted
 * by one store is restored by another with its own local directory — in this process and in a
 * child process —, shared prefix chunks travel once, a damaged remote value is a miss with a
 * 'corrupt' event, and a dead remote leaves the local tiers serving.
 */
import { spawnSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { KvStore, type StoreEvent } from '../../src/index.js';
import { RedisServer, redisServerMissing } from '../helpers/redis-server.js';
import { codecRoundTrip, sameBits, session, storeKit, tempDir, testProfile } from '../helpers/store.js';

const { defer, openStore } = storeKit();
const CHUNK = 8;
const ids = (n: number, seed = 1) => Int32Array.from({ length: n }, (_, i) => (i * 7 + seed * 13) % 500);



if (redisServerMissing) console.warn(`test/store/remote-store skipped: ${redisServerMissing}`);

describe.skipIf(redisServerMissing !== undefined)(`a store with a remote tier${redisServerMissing ? ` (skipped: ${redisServerMissing})` : ''}`, () => {
  let server: RedisServer;
  let ns = 0;
  beforeAll(async () => {
    server = await RedisServer.start();
  });
  afterAll(async () => {
    await server?.stop();
  });
  const remote = (namespace = `store${ns++}`) => ({ url: server.url, namespace });

  it('a session demoted by one store is restored by another, exactly; delete removes it everywhere', async () => {
    const r = remote();
    const a = await openStore({ chunkTokens: CHUNK, remote: r });
    const b = await openStore({ chunkTokens: CHUNK, remote: r });
    const s = session(1, 64);
    await a.put('conv', s, { tokens: ids(64), attachment: new Uint8Array([7, 8]) });
    await a.evict('conv');
    await a.settled(); // the background remote write
    expect(a.stats().remote).toMatchObject({ puts: 1, pendingWrites: 0 });
    expect(b.has('conv')).toBeUndefined(); // has() does no I/O: b has not seen it yet
    const status = {};
    const got = await b.getEntry('conv', { status });
    expect(status).toMatchObject({ result: 'hit', tier: 'remote' });
    expect(got?.tier).toBe('remote');
    expect(Array.from(got!.attachment!)).toEqual([7, 8]);
    expect(sameBits(got!.cache, await codecRoundTrip(s))).toBe(true);
    expect(b.has('conv')).toBe('device');
    expect(await b.matchPrefix(ids(64))).toBe(64); // its token ids came with it
    // Cached locally as it came: demoting it encodes nothing.
    const before = b.stats().codec.encodedTokens;
    await b.evict('conv', { to: 'disk' });
    expect(b.stats().codec.encodedTokens).toBe(before);
    expect(b.stats().remote!.hits).toBe(1);
    // A delete anywhere removes it from the remote.
    expect(await a.delete('conv')).toBe(true);
    await b.delete('conv');
    const c = await openStore({ chunkTokens: CHUNK, remote: r });
    expect(await c.get('conv')).toBeUndefined();
  });

  it("a process holding an older version of a session serves the newer one another process put", async () => {
    const r = remote();
    const a = await openStore({ chunkTokens: CHUNK, remote: r });
    const b = await openStore({ chunkTokens: CHUNK, remote: r });
    const v1 = session(7, 40);
    const v2 = session(8, 72);
    await a.put('turns', v1, { tokens: ids(40) });
    await a.evict('turns');
    await a.settled();
    expect((await b.getEntry('turns'))?.tier).toBe('remote'); // b now holds v1 (hot)
    await new Promise((resolve) => setTimeout(resolve, 2)); // a later put time
    await b.put('turns', v2, { tokens: ids(72, 2) }); // the next turn lands on b (other token ids: other data)
    await b.evict('turns');
    await b.settled();
    // a still holds v1 in its host tier; a get there serves v2.
    expect(a.has('turns')).toBe('host');
    const got = await a.getEntry('turns');
    expect(got?.tier).toBe('remote');
    expect(sameBits(got!.cache, await codecRoundTrip(v2))).toBe(true);
    // And a version a process put itself, not yet sent, is newer than the remote's: served locally.
    const v3 = session(9, 80);
    await new Promise((resolve) => setTimeout(resolve, 2));
    await a.put('turns', v3, { tokens: ids(80, 3) });
    expect((await a.getEntry('turns'))?.tier).toBe('device');
  });

  it('namespaces never see each other; shared prefix chunks are sent once', async () => {
    const shared = remote();
    const a = await openStore({ chunkTokens: CHUNK, remote: shared });
    const other = await openStore({ chunkTokens: CHUNK, remote: remote() });
    const p = session(2, 64);
    await a.put('x', p, { tokens: ids(64) });
    await a.put('y', p, { tokens: ids(64) });
    await a.evict('x');
    await a.settled();
    await a.evict('y');
    await a.settled();
    const st = a.stats().remote!;
    expect(st.puts).toBe(2);
    expect(st.chunksReused).toBeGreaterThanOrEqual(7); // y's 7 chunks were already there
    expect(await other.get('x')).toBeUndefined();
  });

  it('a damaged remote chunk is a miss with a corrupt event, never a wrong cache', async () => {
    const r = remote();
    const a = await openStore({ chunkTokens: CHUNK, remote: r });
    await a.put('d', session(3, 64), { tokens: ids(64, 3) });
    await a.evict('d');
    await a.settled();
    const raw = new Redis({ port: server.port, host: '127.0.0.1' });
    defer(async () => raw.quit());
    const keys = await raw.keys(`*${r.namespace}*`);
    const chunkKeys = keys.filter((k) => k.includes(':c:'));
    expect(chunkKeys.length).toBeGreaterThan(1);
    const victim = chunkKeys[0]!;
    const value = await raw.getBuffer(victim);
    value![value!.length - 3]! ^= 0x40;
    await raw.set(victim, value!, 'KEEPTTL');
    const b = await openStore({ chunkTokens: CHUNK, remote: r });
    const corrupt: StoreEvent[] = [];
    b.on('corrupt', (e) => corrupt.push(e));
    const status = {};
    expect(await b.get('d', { status })).toBeUndefined();
    expect(status).toMatchObject({ result: 'miss', reason: 'corrupt' });
    expect(corrupt.map((e) => e.from)).toEqual(['remote']);
  });

  it('with the remote down the local tiers keep serving and puts succeed, with error events', async () => {
    const own = await RedisServer.start();
    defer(() => own.stop());
    const a = await openStore({ chunkTokens: CHUNK, remote: { url: own.url, namespace: 'down' } });
    const errors: StoreEvent[] = [];
    a.on('error', (e) => errors.push(e));
    await own.kill();
    const s = session(4, 64);
    await a.put('k', s);
    await a.evict('k'); // the remote write fails in the background
    await a.settled();
    expect(errors.some((e) => e.from === 'remote')).toBe(true);
    expect(sameBits((await a.get('k', { promote: false }))!, await codecRoundTrip(s))).toBe(true);
    expect(await a.get('never-put')).toBeUndefined(); // a remote lookup that fails fast: a miss
    // Back up: writes reach it again.
    await own.restart();
    await a.put('k2', s);
    for (let i = 0; i < 100 && !a.stats().remote!.connected; i++) await new Promise((r) => setTimeout(r, 50));
    await a.evict('k2');
    await a.settled();
    const b = await openStore({ chunkTokens: CHUNK, remote: { url: own.url, namespace: 'down' } });
    expect((await b.getEntry('k2'))?.tier).toBe('remote');
  });

  it('an unreachable remote at open is E_IO naming it; waitForReady: false opens and reconnects', async () => {
    const t = await tempDir();
    defer(t.cleanup);
    const profile = await testProfile();
    await expect(KvStore.open({ profile, path: t.path, remote: { url: 'redis://127.0.0.1:1', connectTimeoutMs: 300 } })).rejects.toMatchObject({ code: 'E_IO' });
    const store = await KvStore.open({ profile, path: t.path, remote: { url: 'redis://127.0.0.1:1', waitForReady: false } });
    defer(() => store.close());
    await store.put('a', session(5, 32));
    expect(await store.get('missing')).toBeUndefined();
  });

  it('another process restores what this one demoted', async () => {
    const r = remote();
    const a = await openStore({ chunkTokens: CHUNK, remote: r });
    const s = session(6, 64);
    await a.put('proc', s, { tokens: ids(64, 6) });
    await a.evict('proc', { to: 'disk' });
    await a.settled();
    const t = await tempDir();
    defer(t.cleanup);
    const profilePath = join(t.path, 'p.kvtcp');
    await (await testProfile()).save(profilePath);
    const script = join(t.path, 'reader.mjs');
    const dist = fileURLToPath(new URL('../../dist/index.js', import.meta.url));
    writeFileSync(
      script,
      `import { KvStore, CodecProfile } from ${JSON.stringify(dist)};
const store = await KvStore.open({ profile: await CodecProfile.load(${JSON.stringify(profilePath)}), path: ${JSON.stringify(join(t.path, 'store'))}, chunkTokens: ${CHUNK}, remote: ${JSON.stringify(r)} });
const e = await store.getEntry('proc');
const bytes = e ? Buffer.concat(e.cache.keys.map((k) => Buffer.from(k.buffer, k.byteOffset, k.byteLength))).toString('base64') : '';
console.log(JSON.stringify({ tier: e?.tier, tokens: e?.cache.tokens, keys: bytes }));
await store.close();`,
    );
    const out = spawnSync(process.execPath, [script], { encoding: 'utf8', timeout: 60_000 });
    expect(out.status, out.stderr).toBe(0);
    const res = JSON.parse(out.stdout.trim().split('\n').at(-1)!) as { tier: string; tokens: number; keys: string };
    expect(res).toMatchObject({ tier: 'remote', tokens: 64 });
    const want = await codecRoundTrip(s);
    expect(res.keys).toBe(Buffer.concat(want.keys.map((k) => Buffer.from(k.buffer, k.byteOffset, k.byteLength))).toString('base64'));
  });
});
