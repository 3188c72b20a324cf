/**
 * The llama.cpp adapter's view of models and cache formats without running a model: layouts
 * and refusals from GGUF metadata the tests write themselves, ggml block formats (Q8_0, Q4_0)
 * and sequence states holding them.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readGgufFileInfo } from 'node-llama-cpp';
import { kvLayoutFromGguf } from '../../src/adapters/llama-cpp/architecture.js';
import {
  GGML_TYPE_F16,
  GGML_TYPE_Q4_0,
  GGML_TYPE_Q8_0,
  dequantize,
  kvElementType,
  quantize,
} from '../../src/adapters/llama-cpp/ggml-types.js';
import { parseSequenceState, writeSequenceState, type LlamaSequenceState } from '../../src/adapters/llama-cpp/state.js';
import { modelFingerprint } from '../../src/adapters/llama-cpp/fingerprint.js';
import { f32ToF16Bits } from '../../src/half.js';
import { KvtcError } from '../../src/errors.js';
import { type GgufValue, f32, modelDir, tinyModel, u32 } from '../helpers/gguf-writer.js';
import { mulberry32 } from '../helpers/prng.mjs';

let dir: Awaited<ReturnType<typeof modelDir>>;
beforeAll(async () => {
  dir = await modelDir();
});
afterAll(async () => {
  await dir.cleanup();
});

let n = 0;
async function layoutOf(arch: string, extra: Record<string, GgufValue> = {}, opts: Parameters<typeof tinyModel>[0] extends infer O ? Partial<O> : never = {}) {
  const path = await dir.write(`m${n++}.gguf`, tinyModel({ arch, layers: 2, heads: 4, kvHeads: 2, headDim: 16, extra, ...opts }));
  return kvLayoutFromGguf(await readGgufFileInfo(path, { sourceType: 'filesystem' }), 'f16', path);
}

async function refusal(arch: string, extra: Record<string, GgufValue> = {}): Promise<string> {
  try {
    await layoutOf(arch, extra);
  } catch (err) {
    expect(err).toBeInstanceOf(KvtcError);
    expect((err as KvtcError).code).toBe('E_LAYOUT');
    return (err as KvtcError).message;
  }
  throw new Error(`${arch} was not refused`);
}

describe('layouts from GGUF metadata', () => {
  it('llama rotates adjacent pairs, qwen2 / phi3 / gemma / stablelm / gptneox rotate halves', async () => {
    expect(await layoutOf('llama')).toEqual({ layers: 2, kvHeads: 2, headDim: 16, dtype: 'f16', rope: { theta: 10000, style: 'interleaved', dims: 16 } });
    for (const arch of ['qwen2', 'qwen3', 'phi3', 'gemma', 'stablelm', 'gptneox', 'falcon', 'olmo2']) {
      expect((await layoutOf(arch)).rope?.style, arch).toBe('neox');
    }
    for (const arch of ['baichuan', 'internlm2', 'granite', 'command-r']) expect((await layoutOf(arch)).rope?.style, arch).toBe('interleaved');
    // ALiBi models rotate nothing.
    expect((await layoutOf('bloom')).rope).toBeUndefined();
  });

  it('takes partial rotary dims and theta from the metadata', async () => {
    const l = await layoutOf('stablelm', { 'stablelm.rope.freq_base': f32(500000) }, { ropeDims: 4 });
    expect(l.rope).toEqual({ theta: 500000, style: 'neox', dims: 4 });
  });

  it('linear rope scaling becomes an explicit frequency table', async () => {
    const l = await layoutOf('llama', { 'llama.rope.scaling.type': { t: 'str', v: 'linear' }, 'llama.rope.scaling.factor': f32(4) });
    expect(l.rope?.freqs).toBeInstanceOf(Float32Array);
    expect(l.rope!.freqs![0]).toBeCloseTo(0.25, 6);
    expect(l.rope!.freqs![1]).toBeCloseTo(0.25 * Math.pow(10000, -2 / 16), 6);
  });

  it('refuses what one full-attention KV cache per layer cannot represent, naming it', async () => {
    expect(await refusal('gemma2', { 'gemma2.attention.sliding_window': u32(4096) })).toMatch(/sliding-window.*4096/);
    expect(await refusal('gemma3')).toMatch(/sliding-window/);
    expect(await refusal('cohere2')).toMatch(/sliding-window/);
    expect(await refusal('llama', { 'llama.attention.sliding_window': u32(512) })).toMatch(/sliding_window 512/);
    expect(await refusal('mamba', { 'mamba.ssm.state_size': u32(16) })).toMatch(/recurrent/);
    expect(await refusal('rwkv6')).toMatch(/recurrent/);
    expect(await refusal('jamba')).toMatch(/hybrid/);
    expect(await refusal('deepseek2', { 'deepseek2.attention.kv_lora_rank': u32(512) })).toMatch(/MLA/);
    expect(await refusal('llama', { 'llama.attention.kv_lora_rank': u32(64) })).toMatch(/kv_lora_rank/);
    expect(await refusal('llama', { 'llama.attention.head_count_kv': { t: 'arr-u32', v: [2, 0] } })).toMatch(/different KV head counts/);
    expect(await refusal('llama', { 'llama.attention.value_length': u32(8) })).toMatch(/K heads of 16 and V heads of 8/);
    expect(await refusal('llama', { 'llama.rope.scaling.type': { t: 'str', v: 'yarn' } })).toMatch(/rope scaling 'yarn'/);
    expect(await refusal('qwen2vl')).toMatch(/M-RoPE/);
    expect(await refusal('someday-arch')).toMatch(/not in the adapter's table/);
    // The same head count in every layer is one layout.
    expect((await layoutOf('llama', { 'llama.attention.head_count_kv': { t: 'arr-u32', v: [2, 2] } })).kvHeads).toBe(2);
  });
});

describe('model fingerprints', () => {
  it('are equal for equal files and differ for another quantization or fine-tune of the same shape', async () => {
    const a = await dir.write('fa.gguf', tinyModel({ arch: 'llama', seed: 5 }));
    const b = await dir.write('fb.gguf', tinyModel({ arch: 'llama', seed: 5 }));
    const tuned = await dir.write('fc.gguf', tinyModel({ arch: 'llama', seed: 5, perturb: 1.001 }));
    const fa = await modelFingerprint(a);
    expect(fa).toMatch(/^[0-9a-f]{32}$/);
    expect(await modelFingerprint(b)).toBe(fa);
    expect(await modelFingerprint(tuned)).not.toBe(fa);
    await expect(modelFingerprint(`${dir.path}/missing.gguf`)).rejects.toBeInstanceOf(KvtcError);
  });
});

/** Blocks as ggml writes them: an f16 scale and codes whose extreme sets the scale. */
function ggmlBlocks(type: number, blocks: number, seed: number): Uint8Array {
  const t = kvElementType(type)!;
  const rand = mulberry32(seed);
  const out = new Uint8Array(blocks * t.blockBytes);
  const dv = new DataView(out.buffer);
  for (let b = 0; b < blocks; b++) {
    const p = b * t.blockBytes;
    // Q8_0 scales are amax / 127 >= 0; Q4_0 scales take the sign of the extreme value.
    const sign = type === GGML_TYPE_Q8_0 || rand() < 0.5 ? 1 : -1;
    const d = sign * Math.exp(-6 + 8 * rand());
    dv.setUint16(p, f32ToF16Bits(d), true);
    const extreme = Math.floor(rand() * 32);
    for (let j = 0; j < 32; j++) {
      if (type === GGML_TYPE_Q8_0) {
        // ggml's scale is amax / 127, so the extreme value codes as ±127.
        dv.setInt8(p + 2 + j, j === extreme ? (rand() < 0.5 ? -127 : 127) : Math.floor(rand() * 255) - 127);
      } else {
        // Q4_0's scale is (signed extreme) / -8: the extreme codes as nibble 0.
        const code = j === extreme ? 0 : Math.floor(rand() * 16);
        const i = p + 2 + (j % 16);
        out[i] = j < 16 ? (out[i]! & 0xf0) | code : (out[i]! & 0x0f) | (code << 4);
      }
    }
  }
  return out;
}

describe('ggml block formats', () => {
  // Q8_0 rounds to the nearest of 255 symmetric steps of amax / 127; Q4_0 has codes -8..7 of
  // amax / 8, so values of the other sign than the extreme clamp at 7 steps: up to a full step.
  for (const [type, name, halfStep, bound] of [[GGML_TYPE_Q8_0, 'Q8_0', 1 / 254, 1.13], [GGML_TYPE_Q4_0, 'Q4_0', 1 / 16, 2.01]] as const) {
    it(`${name}: decoding and re-quantizing reproduces ggml blocks byte for byte`, () => {
      const t = kvElementType(type)!;
      const bytes = ggmlBlocks(type, 512, 7 + type);
      const values = new Float32Array(512 * 32);
      dequantize(t, bytes, 0, values);
      const again = new Uint8Array(bytes.length);
      quantize(t, values, again, 0);
      expect(Buffer.from(again).equals(Buffer.from(bytes))).toBe(true);
    });

    it(`${name}: quantizing arbitrary values errs by at most ${name === 'Q8_0' ? 'half a step (amax/254)' : 'a step on the clamped side (amax/8)'} per value`, () => {
      const t = kvElementType(type)!;
      const rand = mulberry32(11);
      const x = Float32Array.from({ length: 32 * 256 }, () => (rand() - 0.5) * 6 * (1 + rand()));
      const bytes = new Uint8Array((x.length / 32) * t.blockBytes);
      quantize(t, x, bytes, 0);
      const y = new Float32Array(x.length);
      dequantize(t, bytes, 0, y);
      let worst = 0;
      for (let b = 0; b < x.length / 32; b++) {
        let amax = 0;
        for (let j = 0; j < 32; j++) amax = Math.max(amax, Math.abs(x[b * 32 + j]!));
        // The f16 scale rounds by up to 2^-11 relative, which moves codes by up to 127 * 2^-11.
        for (let j = 0; j < 32; j++) worst = Math.max(worst, Math.abs(y[b * 32 + j]! - x[b * 32 + j]!) / (amax * halfStep));
      }
      console.log(`[${name}] worst re-quantization error ${worst.toFixed(3)} half steps`);
      expect(worst).toBeLessThan(bound);
      expect(worst).toBeGreaterThan(bound / 2 - 0.1);
    });
  }
});

describe('sequence states with quantized and mixed caches', () => {
  /** A single-stream state file of `cells` cells with K of type kType and V of type vType. */
  function stateFile(kType: number, vType: number, vTrans: 0 | 1, cells: number, kvDim: number, layers: number): Uint8Array {
    const k = kvElementType(kType)!;
    const v = kvElementType(vType)!;
    const kRow = (kvDim / k.blockValues) * k.blockBytes;
    const vRow = (kvDim / v.blockValues) * v.blockBytes;
    const parts: Uint8Array[] = [];
    const u32s = (...xs: number[]): Uint8Array => new Uint8Array(new Uint32Array(xs).buffer);
    parts.push(u32s(0x67677371, 3, cells, ...Array.from({ length: cells }, (_, i) => 10 + i), 1, cells));
    for (let i = 0; i < cells; i++) parts.push(u32s(i, 1, 0));
    parts.push(u32s(vTrans, layers));
    const data = (t: number, bytes: number, seed: number): Uint8Array => {
      const el = kvElementType(t)!;
      if (el.quantized) return ggmlBlocks(t, bytes / el.blockBytes, seed);
      const rand = mulberry32(seed);
      const h = new Uint16Array(bytes / 2).map(() => f32ToF16Bits((rand() - 0.5) * 4));
      return new Uint8Array(h.buffer);
    };
    for (let l = 0; l < layers; l++) {
      const head = new Uint8Array(12);
      new DataView(head.buffer).setInt32(0, kType, true);
      new DataView(head.buffer).setBigUint64(4, BigInt(kRow), true);
      parts.push(head, data(kType, cells * kRow, 100 + l));
    }
    for (let l = 0; l < layers; l++) {
      const head = new Uint8Array(12);
      const hv = new DataView(head.buffer);
      hv.setInt32(0, vType, true);
      if (vTrans) {
        hv.setUint32(4, v.blockBytes, true);
        hv.setUint32(8, kvDim, true);
      } else {
        hv.setBigUint64(4, BigInt(vRow), true);
      }
      parts.push(head, data(vType, cells * vRow, 200 + l));
    }
    return new Uint8Array(Buffer.concat(parts));
  }

  for (const [kType, vType, vTrans] of [
    [GGML_TYPE_Q8_0, GGML_TYPE_Q8_0, 0],
    [GGML_TYPE_Q4_0, GGML_TYPE_Q4_0, 0],
    [GGML_TYPE_Q8_0, GGML_TYPE_F16, 1],
    [GGML_TYPE_Q4_0, GGML_TYPE_Q8_0, 0],
  ] as const) {
    it(`K ${kvElementType(kType)!.name}, V ${kvElementType(vType)!.name}, v_trans ${vTrans}: f32 values, written back byte for byte`, () => {
      const file = stateFile(kType, vType, vTrans, 9, 64, 2);
      const state: LlamaSequenceState = parseSequenceState(file, { theta: 10000, style: 'neox' }, { kvHeads: 2 });
      expect(state.cache.layout).toMatchObject({ kvHeads: 2, headDim: 32, dtype: 'f32' });
      expect([state.kType, state.vType]).toEqual([kType, vType]);
      expect(Buffer.from(writeSequenceState(state)).equals(Buffer.from(file))).toBe(true);
    });
  }

  it('refuses rows that are not whole blocks, transposed quantized V, and types it does not handle', () => {
    const file = stateFile(GGML_TYPE_Q8_0, GGML_TYPE_Q8_0, 0, 4, 64, 1);
    const dv = new DataView(file.buffer, file.byteOffset);
    const kHeader = 12 + 16 + 8 + 4 * 12 + 8;
    expect(dv.getInt32(kHeader, true)).toBe(GGML_TYPE_Q8_0);
    const patched = (edit: (d: DataView) => void): Uint8Array => {
      const c = file.slice();
      edit(new DataView(c.buffer));
      return c;
    };
    expect(() => parseSequenceState(patched((d) => d.setBigUint64(kHeader + 4, 35n, true)))).toThrow(/not a positive multiple of the Q8_0 block size 34/);
    expect(() => parseSequenceState(patched((d) => d.setInt32(kHeader, 12, true)))).toThrow(/unsupported ggml type Q4_K/);
    expect(() => parseSequenceState(patched((d) => d.setUint32(kHeader - 8, 1, true)))).toThrow(/Q8_0 stored transposed/);
    const state = parseSequenceState(file);
    expect(() => writeSequenceState({ ...state, vTrans: 1 })).toThrow(/cannot be written transposed/);
    expect(() => writeSequenceState({ ...state, kType: GGML_TYPE_F16 + 11 })).toThrow(/Q4_K is not a type this adapter writes/);
  });
});
