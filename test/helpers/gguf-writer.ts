/**
 * Writes small GGUF v3 models for tests, so the adapter is exercised on architectures and
 * settings other than stories260K without downloading anything. Weights are seeded random
 * (layouts and formats need no training); a few knobs shape the output distribution (e.g. a
 * model that ends its text at once).
 *
 * GGUF v3 (little-endian): "GGUF", u32 version, u64 tensor_count, u64 kv_count, the key/value
 * pairs, the tensor infos (name, n_dims, ne[], ggml type, offset into the data section), padding
 * to `general.alignment` (32), then the tensor data, each tensor aligned the same way.
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { mulberry32 } from './prng.mjs';

/** A typed GGUF metadata value (GGUF value type ids in the comments). */
export type GgufValue =
  | { t: 'u32'; v: number } // 4
  | { t: 'i32'; v: number } // 5
  | { t: 'f32'; v: number } // 6
  | { t: 'bool'; v: boolean } // 7
  | { t: 'str'; v: string } // 8
  | { t: 'arr-str'; v: string[] } // 9 of 8
  | { t: 'arr-f32'; v: number[] } // 9 of 6
  | { t: 'arr-i32'; v: number[] } // 9 of 5
  | { t: 'arr-u32'; v: number[] }; // 9 of 4

export const u32 = (v: number): GgufValue => ({ t: 'u32', v });
export const f32 = (v: number): GgufValue => ({ t: 'f32', v });
export const str = (v: string): GgufValue => ({ t: 'str', v });

export interface GgufTensor {
  name: string;
  /** ne[0] first (the fastest-moving dimension), as GGUF stores it. */
  dims: number[];
  data: Float32Array;
}

const ALIGN = 32;

class Bytes {
  parts: Buffer[] = [];
  length = 0;
  push(b: Buffer): void {
    this.parts.push(b);
    this.length += b.length;
  }
  u32(v: number): void {
    const b = Buffer.alloc(4);
    b.writeUInt32LE(v >>> 0);
    this.push(b);
  }
  i32(v: number): void {
    const b = Buffer.alloc(4);
    b.writeInt32LE(v);
    this.push(b);
  }
  u64(v: number): void {
    const b = Buffer.alloc(8);
    b.writeBigUInt64LE(BigInt(v));
    this.push(b);
  }
  f32(v: number): void {
    const b = Buffer.alloc(4);
    b.writeFloatLE(v);
    this.push(b);
  }
  str(s: string): void {
    const b = Buffer.from(s, 'utf8');
    this.u64(b.length);
    this.push(b);
  }
  pad(): void {
    const n = (ALIGN - (this.length % ALIGN)) % ALIGN;
    if (n) this.push(Buffer.alloc(n));
  }
}

function writeValue(out: Bytes, value: GgufValue): void {
  switch (value.t) {
    case 'u32':
      out.u32(4), out.u32(value.v);
      return;
    case 'i32':
      out.u32(5), out.i32(value.v);
      return;
    case 'f32':
      out.u32(6), out.f32(value.v);
      return;
    case 'bool':
      out.u32(7), out.push(Buffer.from([value.v ? 1 : 0]));
      return;
    case 'str':
      out.u32(8), out.str(value.v);
      return;
    case 'arr-str':
      out.u32(9), out.u32(8), out.u64(value.v.length);
      for (const s of value.v) out.str(s);
      return;
    case 'arr-f32':
      out.u32(9), out.u32(6), out.u64(value.v.length);
      for (const x of value.v) out.f32(x);
      return;
    case 'arr-i32':
      out.u32(9), out.u32(5), out.u64(value.v.length);
      for (const x of value.v) out.i32(x);
      return;
    case 'arr-u32':
      out.u32(9), out.u32(4), out.u64(value.v.length);
      for (const x of value.v) out.u32(x);
      return;
  }
}

/** The bytes of a GGUF v3 file with these metadata pairs and F32 tensors. */
export function ggufBytes(metadata: Record<string, GgufValue>, tensors: GgufTensor[]): Buffer {
  const out = new Bytes();
  out.push(Buffer.from('GGUF', 'latin1'));
  out.u32(3);
  out.u64(tensors.length);
  out.u64(Object.keys(metadata).length);
  for (const [k, v] of Object.entries(metadata)) {
    out.str(k);
    writeValue(out, v);
  }
  let offset = 0;
  for (const t of tensors) {
    const count = t.dims.reduce((a, b) => a * b, 1);
    if (count !== t.data.length) throw new Error(`tensor ${t.name}: dims ${t.dims} hold ${count} values, data has ${t.data.length}`);
    out.str(t.name);
    out.u32(t.dims.length);
    for (const d of t.dims) out.u64(d);
    out.u32(0); // GGML_TYPE_F32
    out.u64(offset);
    offset += Math.ceil((4 * count) / ALIGN) * ALIGN;
  }
  out.pad();
  for (const t of tensors) {
    out.push(Buffer.from(t.data.buffer, t.data.byteOffset, t.data.byteLength));
    out.pad();
  }
  return Buffer.concat(out.parts);
}

/** An SPM ("llama") vocabulary: <unk>, <s>, </s>, the 256 byte tokens, then "▁" and a..z. */
function vocabulary(): { tokens: string[]; scores: number[]; types: number[] } {
  const tokens = ['<unk>', '<s>', '</s>'];
  const types = [2, 3, 3]; // UNKNOWN, CONTROL, CONTROL
  for (let b = 0; b < 256; b++) {
    tokens.push(`<0x${b.toString(16).toUpperCase().padStart(2, '0')}>`);
    types.push(6); // BYTE
  }
  tokens.push('\u2581');
  types.push(1);
  for (let c = 0; c < 26; c++) {
    tokens.push(String.fromCharCode(97 + c));
    types.push(1);
  }
  return { tokens, scores: tokens.map((_, i) => -i), types };
}

export const TINY_VOCAB = vocabulary().tokens.length; // 286
export const TINY_EOS = 2;

export interface TinyModelOptions {
  /** GGUF architecture: 'llama' (normal RoPE), 'qwen2' (NEOX RoPE, q/k/v biases), or another name for metadata-only files. */
  arch: string;
  layers?: number;
  heads?: number;
  kvHeads?: number;
  headDim?: number;
  ff?: number;
  seed?: number;
  ropeTheta?: number;
  /** Rotated dims per head (`<arch>.rope.dimension_count`); default headDim. */
  ropeDims?: number;
  /**
   * Logit margin by which the end-of-text token leads from the first generated token on: the
   * model ends its text at once (0: no bias).
   */
  eosBias?: number;
  /** Extra metadata pairs (e.g. sliding window keys), added after the standard ones. */
  extra?: Record<string, GgufValue>;
  /** Scales every weight of the model (a "fine-tune" of the same shape). Default 1. */
  perturb?: number;
  /** llama-3 style per-pair rope frequency factors (`rope_freqs.weight`, ropeDims / 2 values). */
  ropeFactors?: number[];
}

/** A tiny model's metadata and tensors (embedding = heads x headDim). */
export function tinyModel(o: TinyModelOptions): Buffer {
  const layers = o.layers ?? 2;
  const heads = o.heads ?? 4;
  const kvHeads = o.kvHeads ?? 2;
  const headDim = o.headDim ?? 32;
  const embd = heads * headDim;
  const ff = o.ff ?? 2 * embd;
  const kvDim = kvHeads * headDim;
  const rand = mulberry32(o.seed ?? 1);
  const voc = vocabulary();
  const nVocab = voc.tokens.length;
  const perturb = o.perturb ?? 1;
  const random = (n: number, scale: number): Float32Array => {
    const a = new Float32Array(n);
    for (let i = 0; i < n; i++) a[i] = (2 * rand() - 1) * scale * perturb;
    return a;
  };
  const ones = (n: number): Float32Array => new Float32Array(n).fill(1);
  const a = o.arch;
  const meta: Record<string, GgufValue> = {
    'general.architecture': str(a),
    'general.name': str(`tiny-${a}`),
    'general.alignment': u32(ALIGN),
    [`${a}.context_length`]: u32(2048),
    [`${a}.embedding_length`]: u32(embd),
    [`${a}.block_count`]: u32(layers),
    [`${a}.feed_forward_length`]: u32(ff),
    [`${a}.attention.head_count`]: u32(heads),
    [`${a}.attention.head_count_kv`]: u32(kvHeads),
    [`${a}.attention.layer_norm_rms_epsilon`]: f32(1e-5),
    [`${a}.rope.dimension_count`]: u32(o.ropeDims ?? headDim),
    [`${a}.rope.freq_base`]: f32(o.ropeTheta ?? 10000),
    'tokenizer.ggml.model': str('llama'),
    'tokenizer.ggml.tokens': { t: 'arr-str', v: voc.tokens },
    'tokenizer.ggml.scores': { t: 'arr-f32', v: voc.scores },
    'tokenizer.ggml.token_type': { t: 'arr-i32', v: voc.types },
    'tokenizer.ggml.bos_token_id': u32(1),
    'tokenizer.ggml.eos_token_id': u32(TINY_EOS),
    'tokenizer.ggml.unknown_token_id': u32(0),
    'tokenizer.ggml.add_bos_token': { t: 'bool', v: true },
    ...o.extra,
  };
  const embed = random(nVocab * embd, 0.5);
  const output = random(nVocab * embd, 0.5);
  if (o.eosBias) {
    // Channel 0 of every embedding is large, so it dominates the residual stream and (after
    // the final RMSNorm) the EOS logit, whose weight on channel 0 is the only large one.
    for (let t = 0; t < nVocab; t++) embed[t * embd] = 4;
    output[TINY_EOS * embd] = o.eosBias;
  }
  // stablelm normalizes with LayerNorm (weight and bias) instead of RMSNorm.
  const layerNorm = a === 'stablelm';
  if (layerNorm) meta[`${a}.attention.layer_norm_epsilon`] = f32(1e-5);
  const zeros = (n: number): Float32Array => new Float32Array(n);
  const tensors: GgufTensor[] = [
    { name: 'token_embd.weight', dims: [embd, nVocab], data: embed },
    { name: 'output_norm.weight', dims: [embd], data: ones(embd) },
    ...(layerNorm ? [{ name: 'output_norm.bias', dims: [embd], data: zeros(embd) }] : []),
    { name: 'output.weight', dims: [embd, nVocab], data: output },
  ];
  if (o.ropeFactors) tensors.push({ name: 'rope_freqs.weight', dims: [o.ropeFactors.length], data: Float32Array.from(o.ropeFactors) });
  const s = 1 / Math.sqrt(embd);
  for (let l = 0; l < layers; l++) {
    const b = `blk.${l}`;
    tensors.push(
      { name: `${b}.attn_norm.weight`, dims: [embd], data: ones(embd) },
      { name: `${b}.attn_q.weight`, dims: [embd, embd], data: random(embd * embd, s) },
      { name: `${b}.attn_k.weight`, dims: [embd, kvDim], data: random(embd * kvDim, s) },
      { name: `${b}.attn_v.weight`, dims: [embd, kvDim], data: random(embd * kvDim, s) },
      { name: `${b}.attn_output.weight`, dims: [embd, embd], data: random(embd * embd, 0.5 * s) },
      { name: `${b}.ffn_norm.weight`, dims: [embd], data: ones(embd) },
      { name: `${b}.ffn_gate.weight`, dims: [embd, ff], data: random(embd * ff, s) },
      { name: `${b}.ffn_down.weight`, dims: [ff, embd], data: random(ff * embd, 0.5 / Math.sqrt(ff)) },
      { name: `${b}.ffn_up.weight`, dims: [embd, ff], data: random(embd * ff, s) },
    );
    if (layerNorm) {
      tensors.push({ name: `${b}.attn_norm.bias`, dims: [embd], data: zeros(embd) }, { name: `${b}.ffn_norm.bias`, dims: [embd], data: zeros(embd) });
    }
    if (a === 'qwen2') {
      tensors.push(
        { name: `${b}.attn_q.bias`, dims: [embd], data: random(embd, 0.5) },
        { name: `${b}.attn_k.bias`, dims: [kvDim], data: random(kvDim, 0.5) },
        { name: `${b}.attn_v.bias`, dims: [kvDim], data: random(kvDim, 0.5) },
      );
    }
  }
  return ggufBytes(meta, tensors);
}

/** A temp folder for written models; `cleanup` removes it. */
export async function modelDir(): Promise<{ path: string; write(name: string, bytes: Buffer): Promise<string>; cleanup(): Promise<void> }> {
  const path = await mkdtemp(join(tmpdir(), 'kvtc-gguf-'));
  return {
    path,
    async write(name, bytes) {
      const file = join(path, name);
      await writeFile(file, bytes);
      return file;
    },
    cleanup: () => rm(path, { recursive: true, force: true }),
  };
}
