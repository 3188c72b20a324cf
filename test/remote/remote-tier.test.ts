// The remote tier against a real redis-server on a loopback port.
import { Redis } from 'ioredis';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { KvtcError } from '../../src/errors.js';
import { RemoteTier, type RemoteCorruptEvent, type RemoteOptions } from '../../src/store/remote-tier.js';
import { RedisServer, SlowProxy, redisServerMissing } from '../helpers/redis-server.js';
import { isWhole, makeSession } from '../helpers/remote-session.js';

const FP = '0123456789abcdef0123456789abcdef';

if (redisServerMissing) console.warn(`test/remote skipped: ${redisServerMissing}`);

/** Polls `cond` every 20 ms, at most `tries` times; whether it became true. */
async function until(cond: () => boolean | Promise<boolean>, tries = 500): Promise<boolean> {
  for (let i = 0; i < tries; i++) {
    if (await cond()) return true;
    await sleep(20);
  }
  return false;
}

describe.skipIf(redisServerMissing !== undefined)(`remote tier, one redis-server${redisServerMissing ? ` (skipped: ${redisServerMissing})` : ''}`, () => {
  let server: RedisServer;
  let raw: Redis;
  const tiers: RemoteTier[] = [];
  let nsCounter = 0;

  /** A tier on its own namespace (unless given), closed after the file. */
  async function tier(o: Partial<RemoteOptions> = {}, fp = FP): Promise<RemoteTier> {
    const t = await RemoteTier.connect({ url: server.url, namespace: `t${nsCounter++}`, ...o }, fp);
    tiers.push(t);
    return t;
  }

  beforeAll(async () => {
    server = await RedisServer.start();
    raw = new Redis({ port: server.port, host: '127.0.0.1', lazyConnect: true });
    await raw.connect();
  });

  afterAll(async () => {
    for (const t of tiers) await t.close();
    raw?.disconnect();
    await server?.stop();
  });

  it('round-trips a session, sends only missing chunks again, and counts bytes', async () => {
    const t = await tier();
    const s = makeSession(1, 12, 4096);
    await t.putSession('conv-1', s.manifest, s.chunks);
    const r = await t.getSession('conv-1');
    expect(r.ok && isWhole(r, s)).toBe(true);
    expect(await t.hasSession('conv-1')).toBe(true);
    expect(await t.hasSession('conv-2')).toBe(false);
    expect(await t.getSession('conv-2')).toEqual({ ok: false, reason: 'absent' });
    const st = t.stats();
    expect(st).toMatchObject({ connected: true, gets: 2, hits: 1, puts: 1, chunksWritten: 12, chunksReused: 0, errors: 0 });
    expect(st.misses.absent).toBe(1);
    expect(st.bytesSent).toBeGreaterThan(12 * 4096);
    expect(st.bytesReceived).toBeGreaterThan(12 * 4096);

    // The same session grown by one chunk: only that chunk travels.
    const grown = makeSession(1, 13, 4096);
    const before = t.stats().bytesSent;
    await t.putSession('conv-1', grown.manifest, grown.chunks);
    expect(t.stats()).toMatchObject({ chunksWritten: 13, chunksReused: 12 });
    expect(t.stats().bytesSent - before).toBeLessThan(2 * 4096);
    const g = await t.getSession('conv-1');
    expect(g.ok && isWhole(g, grown)).toBe(true);
  });

  it('fetches only the chunks chunkKeys() asks for, and refuses one the manifest does not name', async () => {
    const t = await tier();
    const s = makeSession(2, 6, 512);
    await t.putSession('p', s.manifest, s.chunks);
    const r = await t.getSession('p', (m, named) => {
      expect(Buffer.from(m).equals(Buffer.from(s.manifest))).toBe(true);
      expect(named).toEqual(s.chunks.map((c) => c.key));
      return named.slice(0, 2);
    });
    expect(r.ok && [...r.chunks.keys()]).toEqual(s.chunks.slice(0, 2).map((c) => c.key));
    await expect(t.getSession('p', () => ['ee'.repeat(16)])).rejects.toMatchObject({ code: 'E_OPTIONS' });
    const mine = new Error('caller bug');
    await expect(t.getSession('p', () => {
      throw mine;
    })).rejects.toBe(mine);
    expect(t.stats().errors).toBe(0);
  });

  it('shares sessions between two tiers on one namespace; deleting one session keeps the chunks another uses', async () => {
    const a = await tier({ namespace: 'shared' });
    const b = await tier({ namespace: 'shared' });
    const s = makeSession(3, 8, 1024);
    // Two sessions with the same first 6 chunks (a shared prefix).
    const other = { manifest: Uint8Array.of(9), chunks: [...s.chunks.slice(0, 6), ...makeSession(4, 2, 1024).chunks] };
    await a.putSession('one', s.manifest, s.chunks);
    await b.putSession('two', other.manifest, other.chunks);
    expect(b.stats().chunksReused).toBe(6);
    const r = await b.getSession('one');
    expect(r.ok && isWhole(r, s)).toBe(true);
    expect(await a.deleteSession('one')).toBe(true);
    expect(await a.deleteSession('one')).toBe(false);
    expect(await b.getSession('one')).toMatchObject({ ok: false, reason: 'absent' });
    const r2 = await a.getSession('two');
    expect(r2.ok && isWhole(r2, other)).toBe(true);
  });

  it('keeps every chunk lease at least as long as the manifest naming it, after puts and gets', async () => {
    const t = await tier({ ttlMs: 60_000, leaseGraceMs: 30_000 });
    const s = makeSession(5, 5, 256);
    await t.putSession('l', s.manifest, s.chunks, { ttlMs: 20_000 });
    const mttl = await raw.pttl(t.manifestKey('l'));
    expect(mttl).toBeGreaterThan(0);
    expect(mttl).toBeLessThanOrEqual(20_000);
    for (const c of s.chunks) expect(await raw.pttl(t.chunkKey(c.key))).toBeGreaterThan(mttl + 25_000);
    // A longer-lived session naming the same chunks lengthens their leases; a shorter put never shortens them.
    await t.putSession('l2', s.manifest, s.chunks, { ttlMs: 50_000 });
    await t.putSession('l3', s.manifest, s.chunks, { ttlMs: 1_000 });
    for (const c of s.chunks) expect(await raw.pttl(t.chunkKey(c.key))).toBeGreaterThan(75_000);
    // A get renews the manifest to its own ttl.
    await raw.pexpire(t.manifestKey('l'), 500);
    expect((await t.getSession('l')).ok).toBe(true);
    expect(await raw.pttl(t.manifestKey('l'))).toBeGreaterThan(15_000);
  });

  it('lets everything of an unused session expire by its leases', async () => {
    const t = await tier({ ttlMs: 150, leaseGraceMs: 150 });
    const s = makeSession(6, 4, 128);
    await t.putSession('e', s.manifest, s.chunks);
    expect(await until(async () => (await raw.keys(`${t.keyPrefix}*`)).length === 0)).toBe(true);
    expect(await t.getSession('e')).toMatchObject({ ok: false, reason: 'absent' });
  });

  it('concurrent puts of one id from two tiers: every read sees one session whole, never a mix', async () => {
    const a = await tier({ namespace: 'race' });
    const b = await tier({ namespace: 'race' });
    const r = await tier({ namespace: 'race' });
    const sa = makeSession(10, 24, 2048);
    const sb = makeSession(11, 24, 2048);
    let stop = false;
    let reads = 0;
    const reader = (async () => {
      while (!stop) {
        const g = await r.getSession('same');
        if (g.ok) {
          expect(isWhole(g, sa) || isWhole(g, sb)).toBe(true);
          reads++;
        } else {
          expect(g.reason).toBe('absent');
        }
      }
    })();
    for (let round = 0; round < 15; round++) {
      await Promise.all([a.putSession('same', sa.manifest, sa.chunks), b.putSession('same', sb.manifest, sb.chunks)]);
      const g = await r.getSession('same');
      expect(g.ok && (isWhole(g, sa) || isWhole(g, sb))).toBe(true);
    }
    stop = true;
    await reader;
    expect(reads).toBeGreaterThan(0);
  });

  it('keeps namespaces and profiles apart', async () => {
    const a = await tier({ namespace: 'tenant:a' });
    const b = await tier({ namespace: 'tenant:b' });
    const c = await tier({ namespace: 'tenant:a' }, 'fedcba9876543210fedcba9876543210');
    const sa = makeSession(20, 3, 100);
    const sb = makeSession(21, 3, 100);
    await a.putSession('x', sa.manifest, sa.chunks);
    expect(await b.getSession('x')).toMatchObject({ ok: false, reason: 'absent' });
    expect(await c.getSession('x')).toMatchObject({ ok: false, reason: 'absent' });
    await b.putSession('x', sb.manifest, sb.chunks);
    const ga = await a.getSession('x');
    const gb = await b.getSession('x');
    expect(ga.ok && isWhole(ga, sa)).toBe(true);
    expect(gb.ok && isWhole(gb, sb)).toBe(true);
    const keys = await raw.keys('kvtc:*');
    expect(keys.every((k) => !k.includes('tenant:a') && !k.includes('{'))).toBe(true);
  });

  it('stores ids with odd characters, each under its own key', async () => {
    const t = await tier();
    const ids = ['with space', 'ключ', '🙂', 'a:b{c}d', 'nul\u0000byte', '../../etc/passwd', '*', 'x'.repeat(10_000), '\r\n'];
    for (const [i, id] of ids.entries()) {
      const s = makeSession(100 + i, 2, 64);
      await t.putSession(id, s.manifest, s.chunks);
    }
    for (const [i, id] of ids.entries()) {
      const g = await t.getSession(id);
      expect(g.ok && isWhole(g, makeSession(100 + i, 2, 64)), JSON.stringify(id.slice(0, 20))).toBe(true);
    }
    await expect(t.putSession('', Uint8Array.of(), [])).rejects.toMatchObject({ code: 'E_OPTIONS' });
    await expect(t.getSession('a\uDC00')).rejects.toMatchObject({ code: 'E_OPTIONS' });
    await expect(t.putSession('k', Uint8Array.of(), [{ key: 'NOTHEX', blob: Uint8Array.of() }])).rejects.toMatchObject({ code: 'E_OPTIONS' });
  });

  it('a damaged chunk is a miss with reason corrupt and a corrupt event; a later put repairs it', async () => {
    const t = await tier();
    const events: RemoteCorruptEvent[] = [];
    t.on('corrupt', (e) => events.push(e));
    const s = makeSession(30, 4, 1000);
    await t.putSession('d', s.manifest, s.chunks);
    const victim = t.chunkKey(s.chunks[2]!.key);
    await raw.setrange(victim, 500, 'XYZ');
    const g = await t.getSession('d');
    expect(g).toMatchObject({ ok: false, reason: 'corrupt' });
    expect(events).toEqual([expect.objectContaining({ id: 'd', chunk: s.chunks[2]!.key, reason: 'corrupt' })]);
    // The bad value is gone, so the manifest now names a missing chunk: a miss, and it goes too.
    expect(await until(async () => (await raw.exists(victim)) === 0)).toBe(true);
    expect(await t.getSession('d')).toMatchObject({ ok: false, reason: 'absent' });
    expect(await until(async () => !(await t.hasSession('d')))).toBe(true);
    await t.putSession('d', s.manifest, s.chunks);
    const again = await t.getSession('d');
    expect(again.ok && isWhole(again, s)).toBe(true);
  });

  it('a damaged or foreign manifest is a miss, never served', async () => {
    const t = await tier({ namespace: 'm' });
    const s = makeSession(31, 2, 100);
    await t.putSession('a', s.manifest, s.chunks);
    await t.putSession('b', s.manifest, s.chunks);
    // A valid manifest copied under another id's key names the wrong session.
    await raw.copy(t.manifestKey('a'), t.manifestKey('b'), 'REPLACE');
    expect(await t.getSession('b')).toMatchObject({ ok: false, reason: 'corrupt' });
    await raw.setrange(t.manifestKey('a'), 2, '\u0000');
    expect(await t.getSession('a')).toMatchObject({ ok: false, reason: 'corrupt' });
    expect(await t.hasSession('a')).toBe(false);
  });

  it('a session naming a chunk the server lost (eviction, flush) is a miss, not a partial session', async () => {
    const t = await tier();
    const s = makeSession(32, 3, 100);
    await t.putSession('lost', s.manifest, s.chunks);
    await raw.del(t.chunkKey(s.chunks[1]!.key));
    expect(await t.getSession('lost')).toMatchObject({ ok: false, reason: 'absent', detail: expect.stringContaining(s.chunks[1]!.key) });
    // Leases of the chunk a miss did not reach are untouched and the manifest is removed.
    expect(await until(async () => (await raw.exists(t.manifestKey('lost'))) === 0)).toBe(true);
  });

  it('refuses puts past capacityBytes with E_CAPACITY', async () => {
    const used = Number(/used_memory:(\d+)/.exec(await raw.info('memory'))![1]);
    const t = await tier({ capacityBytes: used + 100_000 });
    const small = makeSession(40, 1, 1000);
    await t.putSession('fits', small.manifest, small.chunks);
    const big = makeSession(41, 4, 100_000);
    await expect(t.putSession('big', big.manifest, big.chunks)).rejects.toMatchObject({ code: 'E_CAPACITY' });
    expect(await t.hasSession('big')).toBe(false);
  });

  it('a stalled server: gets miss with reason timeout and puts fail with E_IO, without hanging; then it serves again', async () => {
    const proxy = await SlowProxy.start(server.port);
    try {
      const t = await tier({ url: proxy.url, timeoutMs: 200, putTimeoutMs: 300 });
      const errors: KvtcError[] = [];
      t.on('error', (e) => errors.push(e));
      const s = makeSession(50, 3, 500);
      await t.putSession('slow', s.manifest, s.chunks);
      proxy.pause();
      expect(await t.getSession('slow')).toMatchObject({ ok: false, reason: 'timeout' });
      const s2 = makeSession(51, 3, 500);
      await expect(t.putSession('slow2', s2.manifest, s2.chunks)).rejects.toMatchObject({ code: 'E_IO' });
      expect(errors.some((e) => e.code === 'E_IO')).toBe(true);
      expect(t.stats().misses.timeout).toBe(1);
      proxy.resume();
      // The timed-out put never writes its manifest, even once the stalled commands get through.
      await sleep(100);
      expect(await until(async () => (await t.getSession('slow')).ok)).toBe(true);
      expect(await t.hasSession('slow2')).toBe(false);
    } finally {
      await proxy.close();
    }
  });

  it('a server that is not there: connect() fails with E_IO, or with waitForReady false every call fails fast', async () => {
    const port = server.port + 1;
    await expect(RemoteTier.connect({ url: `redis://127.0.0.1:${port}`, connectTimeoutMs: 300 }, FP)).rejects.toMatchObject({ code: 'E_IO' });
    const t = await tier({ url: `redis://127.0.0.1:${port}`, waitForReady: false });
    const errors: KvtcError[] = [];
    t.on('error', (e) => errors.push(e));
    const s = makeSession(60, 1, 10);
    expect(await t.getSession('x')).toMatchObject({ ok: false, reason: 'unavailable' });
    await expect(t.putSession('x', s.manifest, s.chunks)).rejects.toMatchObject({ code: 'E_IO' });
    await expect(t.hasSession('x')).rejects.toMatchObject({ code: 'E_IO' });
    await expect(t.deleteSession('x')).rejects.toMatchObject({ code: 'E_IO' });
    expect(await until(() => errors.length > 0)).toBe(true);
    expect(t.stats()).toMatchObject({ connected: false });
    expect(t.stats().errors).toBeGreaterThan(0);
  });

  it('close() is final: later calls are E_CLOSED', async () => {
    const t = await tier();
    await t.close();
    await t.close();
    await expect(t.getSession('x')).rejects.toMatchObject({ code: 'E_CLOSED' });
    await expect(t.putSession('x', Uint8Array.of(), [])).rejects.toMatchObject({ code: 'E_CLOSED' });
    expect(t.stats().connected).toBe(false);
  });
});

describe.skipIf(redisServerMissing !== undefined)(`remote tier, redis-server killed and restarted${redisServerMissing ? ` (skipped: ${redisServerMissing})` : ''}`, () => {
  it('calls fail fast as misses or E_IO while it is down, nothing wrong is served, and the tier recovers', async () => {
    const server = await RedisServer.start();
    const t = await RemoteTier.connect({ url: server.url, namespace: 'restart' }, FP);
    try {
      const errors: KvtcError[] = [];
      let readies = 0;
      t.on('error', (e) => errors.push(e));
      t.on('ready', () => readies++);
      const s = makeSession(70, 6, 2000);
      await t.putSession('r', s.manifest, s.chunks);

      // Killed while a get and a put are in flight: both settle, as a miss and as E_IO or success.
      const inflightGet = t.getSession('r');
      const inflightPut = t.putSession('r2', s.manifest, s.chunks).then(() => 'ok', (e: KvtcError) => e.code);
      await server.kill('SIGKILL');
      const g = await inflightGet;
      expect(g.ok ? isWhole(g, s) : ['unavailable', 'timeout'].includes(g.reason)).toBe(true);
      expect(['ok', 'E_IO']).toContain(await inflightPut);

      expect(await until(() => !t.stats().connected)).toBe(true);
      expect(await t.getSession('r')).toMatchObject({ ok: false, reason: 'unavailable' });
      await expect(t.putSession('r3', s.manifest, s.chunks)).rejects.toMatchObject({ code: 'E_IO' });
      expect(await until(() => errors.length > 0)).toBe(true);

      await server.restart();
      expect(await until(() => t.stats().connected)).toBe(true);
      expect(readies).toBeGreaterThan(0);
      // The restarted server has no persistence: the old session is gone, and reads as absent.
      expect(await t.getSession('r')).toMatchObject({ ok: false, reason: 'absent' });
      await t.putSession('r', s.manifest, s.chunks);
      const back = await t.getSession('r');
      expect(back.ok && isWhole(back, s)).toBe(true);
      expect(t.stats().errors).toBeGreaterThan(0);
    } finally {
      await t.close();
      await server.stop();
    }
  });
});

describe.skipIf(redisServerMissing !== undefined)(`remote tier with AUTH and ACL users${redisServerMissing ? ` (skipped: ${redisServerMissing})` : ''}`, () => {
  it('passes credentials through, and an ACL restricted to one namespace keeps a tenant to its keys', async () => {
    const server = await RedisServer.start(['--requirepass', 'admin-secret']);
    const admin = new Redis({ port: server.port, host: '127.0.0.1', password: 'admin-secret' });
    const tiers: RemoteTier[] = [];
    try {
      const probe = await RemoteTier.connect({ url: `redis://:admin-secret@127.0.0.1:${server.port}`, namespace: 'tenant-a' }, FP);
      tiers.push(probe);
      // ACL: user alice may touch only the keys of namespace tenant-a.
      await admin.call('ACL', 'SETUSER', 'alice', 'on', '>alice-pw', 'resetkeys', `~${probe.keyPrefix}*`, '+@all');
      await expect(RemoteTier.connect({ url: server.url, password: 'wrong', connectTimeoutMs: 500 }, FP)).rejects.toMatchObject({ code: 'E_IO' });
      const alice = await RemoteTier.connect({ url: server.url, username: 'alice', password: 'alice-pw', namespace: 'tenant-a' }, FP);
      const aliceElsewhere = await RemoteTier.connect({ url: `redis://alice:alice-pw@127.0.0.1:${server.port}`, namespace: 'tenant-b' }, FP);
      tiers.push(alice, aliceElsewhere);
      const s = makeSession(80, 3, 100);
      await alice.putSession('x', s.manifest, s.chunks);
      const g = await probe.getSession('x');
      expect(g.ok && isWhole(g, s)).toBe(true);
      await expect(aliceElsewhere.putSession('x', s.manifest, s.chunks)).rejects.toMatchObject({ code: 'E_IO' });
      expect(await aliceElsewhere.getSession('x')).toMatchObject({ ok: false, reason: 'unavailable', detail: expect.stringMatching(/NOPERM/) });
    } finally {
      for (const t of tiers) await t.close();
      admin.disconnect();
      await server.stop();
    }
  });
});
