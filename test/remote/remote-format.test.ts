// The remote tier's frames, keys and options, without a server.
import { describe, expect, it } from 'vitest';
import { KvtcError } from '../../src/errors.js';
import { FrameKind, readFrame, readManifestBody, writeFrame, writeManifestBody } from '../../src/store/remote-frame.js';
import { RemoteKeys, checkSessionId, escapeNamespace } from '../../src/store/remote-keys.js';
import { resolveRemoteOptions } from '../../src/store/remote-options.js';
import { RemoteTier } from '../../src/store/remote-tier.js';

const FP = '0123456789abcdef0123456789abcdef';
const FP2 = 'fedcba9876543210fedcba9876543210';
const KEY = 'ab'.repeat(16);

function code(fn: () => unknown): string | undefined {
  try {
    fn();
  } catch (err) {
    return err instanceof KvtcError ? err.code : `not a KvtcError: ${String(err)}`;
  }
  return undefined;
}

describe('remote frames', () => {
  const payload = Uint8Array.from({ length: 300 }, (_, i) => (i * 7) & 0xff);

  it('round-trips a chunk and a manifest, with the ttl', () => {
    const c = readFrame(writeFrame(FrameKind.chunk, FP, KEY, payload), FrameKind.chunk, FP, KEY);
    expect('payload' in c && Buffer.from(c.payload).equals(Buffer.from(payload))).toBe(true);
    const body = writeManifestBody([KEY, 'cd'.repeat(32)], Uint8Array.of(1, 2, 3));
    const m = readFrame(writeFrame(FrameKind.manifest, FP, 'sess/ü', body, 1234), FrameKind.manifest, FP, 'sess/ü');
    expect('payload' in m && m.ttlMs).toBe(1234);
    const parsed = 'payload' in m ? readManifestBody(m.payload) : undefined;
    expect(parsed?.chunkKeys).toEqual([KEY, 'cd'.repeat(32)]);
    expect([...parsed!.manifest]).toEqual([1, 2, 3]);
  });

  it('refuses every single damaged byte, a truncation and an extension, as corrupt', () => {
    const f = writeFrame(FrameKind.chunk, FP, KEY, payload);
    for (let i = 0; i < f.length; i++) {
      const d = Buffer.from(f);
      d[i] = d[i]! ^ 0x10;
      expect(readFrame(d, FrameKind.chunk, FP, KEY)).toMatchObject({ reason: 'corrupt' });
    }
    expect(readFrame(f.subarray(0, f.length - 1), FrameKind.chunk, FP, KEY)).toMatchObject({ reason: 'corrupt' });
    expect(readFrame(Buffer.concat([f, Buffer.of(0)]), FrameKind.chunk, FP, KEY)).toMatchObject({ reason: 'corrupt' });
    expect(readFrame(new Uint8Array(3), FrameKind.chunk, FP, KEY)).toMatchObject({ reason: 'corrupt' });
  });

  it('tells another profile, another name and another kind apart', () => {
    const f = writeFrame(FrameKind.chunk, FP, KEY, payload);
    expect(readFrame(f, FrameKind.chunk, FP2, KEY)).toMatchObject({ reason: 'profile-mismatch' });
    expect(readFrame(f, FrameKind.chunk, FP, 'cd'.repeat(16))).toMatchObject({ reason: 'corrupt' });
    expect(readFrame(f, FrameKind.manifest, FP, KEY)).toMatchObject({ reason: 'corrupt' });
  });

  it('refuses a malformed chunk list', () => {
    expect(readManifestBody(Uint8Array.of(5, 0, 0, 0, 32))).toBeUndefined();
    const bad = writeManifestBody(['zz'.repeat(16)], new Uint8Array(0));
    expect(readManifestBody(bad)).toBeUndefined();
  });
});

describe('remote keys', () => {
  it('escapes namespaces injectively, with no separator and no hash tag left', () => {
    const names = ['a', 'a:b', 'a%3Ab', 'a{b}', 'tenant/1', 'ключ', '🙂', 'a b', 'A', '-_.'];
    const escaped = names.map(escapeNamespace);
    expect(new Set(escaped).size).toBe(names.length);
    for (const e of escaped) expect(e).toMatch(/^[A-Za-z0-9._%-]+$/);
  });

  it('hashes ids (no id text in a key) and keeps namespaces and profiles apart', () => {
    const k = new RemoteKeys('t', FP);
    expect(k.manifest('x:{y}')).toMatch(/^kvtc:1:t:[0-9a-f]{32}:m:[0-9a-f]{32}$/);
    expect(k.manifest('a')).not.toBe(k.manifest('b'));
    expect(new RemoteKeys('t2', FP).manifest('a')).not.toBe(k.manifest('a'));
    expect(new RemoteKeys('t', FP2).chunk(KEY)).not.toBe(k.chunk(KEY));
  });

  it('checks ids: empty, lone surrogates and over-long ones are E_OPTIONS', () => {
    expect(code(() => checkSessionId('', 'id'))).toBe('E_OPTIONS');
    expect(code(() => checkSessionId('a\uD800b', 'id'))).toBe('E_OPTIONS');
    expect(code(() => checkSessionId('x'.repeat(70000), 'id'))).toBe('E_OPTIONS');
    expect(code(() => checkSessionId(42, 'id'))).toBe('E_OPTIONS');
    expect(code(() => checkSessionId('🙂\u0000', 'id'))).toBeUndefined();
  });
});

describe('remote options', () => {
  it('parses URLs, credentials, TLS and cluster seeds', () => {
    const o = resolveRemoteOptions({ url: 'rediss://u%40x:p%3Aw@[::1]:7000/2' });
    expect(o).toMatchObject({ nodes: [{ host: '::1', port: 7000 }], db: 2, username: 'u@x', password: 'p:w', tls: {}, cluster: false, namespace: 'default' });
    const c = resolveRemoteOptions({ url: 'redis://h', cluster: { nodes: ['a:1', 'redis://b:2'] }, password: 'z' });
    expect(c).toMatchObject({ cluster: true, nodes: [{ host: 'a', port: 1 }, { host: 'b', port: 2 }], password: 'z', tls: undefined });
  });

  it('refuses bad options with E_OPTIONS', () => {
    for (const o of [
      {},
      { url: 'http://x' },
      { url: 'redis://x', ttlMs: 0 },
      { url: 'redis://x', timeoutMs: 1.5 },
      { url: 'redis://x', namespace: '' },
      { url: 'redis://x', colour: 'red' },
      { url: 'redis://x/1', cluster: true },
      { url: 'redis://x', cluster: { nodes: ['nocolon'] } },
      { url: 'redis://x', capacityBytes: -1 },
      { url: 'redis://x', tls: 'yes' },
    ]) {
      expect(code(() => resolveRemoteOptions(o)), JSON.stringify(o)).toBe('E_OPTIONS');
    }
  });

  it('connect() refuses a bad fingerprint before connecting', async () => {
    await expect(RemoteTier.connect({ url: 'redis://127.0.0.1:1' }, 'XYZ')).rejects.toMatchObject({ code: 'E_OPTIONS' });
  });
});
