/**
 * Deterministic test sessions for the remote tier: `n` chunks of `bytes` pseudo-random bytes from
 * `seed`, each keyed by the SHA-256 of its bytes (content-addressed, as the store keys them), and a
 * manifest that names the seed and the keys in order. The same arguments give the same session in
 * any process, so a child writer and the test reading back agree without sharing memory.
 */
import { createHash } from 'node:crypto';
import type { RemoteChunk } from '../../src/store/remote-tier.js';

export interface TestSession {
  manifest: Uint8Array;
  chunks: RemoteChunk[];
}

/** xorshift32 bytes: fast, and different for every (seed, chunk). */
function fill(out: Uint8Array, seed: number): void {
  let x = seed >>> 0 || 0x9e3779b9;
  for (let i = 0; i < out.length; i++) {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    out[i] = x & 0xff;
  }
}

export function makeSession(seed: number, n: number, bytes: number): TestSession {
  const chunks: RemoteChunk[] = [];
  for (let i = 0; i < n; i++) {
    const blob = new Uint8Array(bytes);
    fill(blob, Math.imul(seed + 1, 0x01000193) ^ (i + 1));
    chunks.push({ key: createHash('sha256').update(blob).digest('hex'), blob });
  }
  const manifest = new TextEncoder().encode(JSON.stringify({ seed, keys: chunks.map((c) => c.key) }));
  return { manifest, chunks };
}

/** Whether a getSession() result is exactly session `s`, whole. */
export function isWhole(r: { manifest: Uint8Array; chunks: Map<string, Uint8Array> }, s: TestSession): boolean {
  if (Buffer.compare(Buffer.from(r.manifest), Buffer.from(s.manifest)) !== 0) return false;
  if (r.chunks.size !== new Set(s.chunks.map((c) => c.key)).size) return false;
  return s.chunks.every((c) => {
    const got = r.chunks.get(c.key);
    return got !== undefined && Buffer.compare(Buffer.from(got), Buffer.from(c.blob)) === 0;
  });
}
