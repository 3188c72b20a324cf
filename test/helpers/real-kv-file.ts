/**
 * The real stories260K caches of the GPU parity test, from the model or from a file. The GPU
 * machine has no model runtime (node-llama-cpp is left out of its kit), so
 * scripts/device/pack.sh saves the caches here into the kit and scripts/device/check.sh names
 * the file in KVTC_REAL_CACHES. Values are stored as the bytes of their arrays, bit-exact.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import type { KvCache } from '../../src/layout.js';

interface SavedCache {
  layout: KvCache['layout'];
  tokens: number;
  positions: string;
  keys: string[];
  values: string[];
}

const bytesOf = (a: ArrayBufferView) => Buffer.from(a.buffer, a.byteOffset, a.byteLength).toString('base64');

function f32(b64: string): Float32Array {
  const b = Buffer.from(b64, 'base64');
  return new Float32Array(b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength));
}

export function saveCaches(path: string, caches: KvCache[]): void {
  const saved: SavedCache[] = caches.map((c) => {
    if (c.layout.dtype !== 'f32') throw new Error('saveCaches keeps f32 caches only');
    return { layout: c.layout, tokens: c.tokens, positions: bytesOf(c.positions!), keys: c.keys.map(bytesOf), values: c.values.map(bytesOf) };
  });
  writeFileSync(path, JSON.stringify(saved));
}

export function loadCaches(path: string): KvCache[] {
  return (JSON.parse(readFileSync(path, 'utf8')) as SavedCache[]).map((s) => {
    const p = Buffer.from(s.positions, 'base64');
    return {
      layout: s.layout,
      tokens: s.tokens,
      positions: new Int32Array(p.buffer.slice(p.byteOffset, p.byteOffset + p.byteLength)),
      keys: s.keys.map(f32),
      values: s.values.map(f32),
    };
  });
}

/** The GPU parity test's caches: the first three story openings, 96 tokens each. */
export async function parityCaches(): Promise<KvCache[]> {
  const file = process.env.KVTC_REAL_CACHES;
  if (file) return loadCaches(file);
  const { loadPrompts, realCaches } = await import('./real-kv.js');
  return realCaches({ prompts: loadPrompts().slice(0, 3), tokens: 96 });
}
