/**
 * Low-rank + noise bf16 KV shaped like Llama-3.1-8B (32 layers x 8 KV heads x 128): structure,
 * not realism, drives the timings of the throughput benchmarks. `layers` shrinks it for smoke
 * runs on the CUDA emulator.
 */
import { fromFloat32 } from '../src/half.js';
import type { KvCache, KvLayout } from '../src/index.js';
import { gaussian, mulberry32 } from '../test/helpers/synthetic.js';

export const LLAMA_8B_LAYOUT: KvLayout = { layers: 32, kvHeads: 8, headDim: 128, dtype: 'bf16', rope: { theta: 500000, style: 'neox' } };

export function llamaShaped(tokens: number, seed: number, layers = 32): KvCache {
  const layout: KvLayout = { ...LLAMA_8B_LAYOUT, layers };
  const rv = 1024;
  const rank = 16;
  const g = gaussian(mulberry32(seed));
  const lg = gaussian(mulberry32(4242));
  const keys: Uint16Array[] = [];
  const values: Uint16Array[] = [];
  const z = new Float32Array(tokens * rank);
  for (let i = 0; i < z.length; i++) z[i] = g() / (1 + (i % rank));
  const row = new Float32Array(tokens * rv);
  for (let l = 0; l < layout.layers; l++) {
    for (const list of [keys, values]) {
      const load = Float32Array.from({ length: rank * rv }, () => lg());
      for (let t = 0; t < tokens; t++) {
        const o = t * rv;
        for (let j = 0; j < rv; j++) row[o + j] = 0.05 * g();
        for (let r = 0; r < rank; r++) {
          const zr = z[t * rank + r]!;
          const lr = r * rv;
          for (let j = 0; j < rv; j++) row[o + j]! += zr * load[lr + j]!;
        }
      }
      list.push(fromFloat32(row, 'bf16') as Uint16Array);
    }
  }
  return { layout, tokens, keys, values };
}
