/**
 * What a GGUF model's KV cache looks like, from its metadata alone: the architecture decides how
 * llama.cpp rotates keys (its rope type per architecture), the hyperparameters give the shape,
 * and caches kvtc cannot represent as one full-attention KvCache per layer are refused here,
 * before anything is stored.
 *
 * The tables below were written for this project from llama.cpp's behaviour (its per-architecture
 * rope types and cache kinds) as of node-llama-cpp 3.21's bundled llama.cpp; an architecture
 * missing from them is refused with E_LAYOUT rather than guessed.
 */
import { openSync, readSync, closeSync } from 'node:fs';
import { KvtcError } from '../../errors.js';
import type { DType, KvLayout, RopeSpec } from '../../layout.js';

/**
 * llama.cpp rope types by GGUF architecture name. 'interleaved' is llama.cpp's normal mode
 * (pairs of adjacent values), 'neox' rotates value i with value i + n_rot/2, 'none' applies no
 * rotation to keys (ALiBi or learned positions).
 */
const ROPE_STYLE: Record<string, 'interleaved' | 'neox' | 'none'> = {
  // normal (adjacent pairs)
  llama: 'interleaved',
  deci: 'interleaved',
  baichuan: 'interleaved',
  starcoder: 'interleaved',
  plamo: 'interleaved',
  orion: 'interleaved',
  internlm2: 'interleaved',
  minicpm: 'interleaved',
  xverse: 'interleaved',
  'command-r': 'interleaved',
  olmo: 'interleaved',
  arctic: 'interleaved',
  deepseek: 'interleaved',
  chatglm: 'interleaved',
  granite: 'interleaved',
  granitemoe: 'interleaved',
  chameleon: 'interleaved',
  // NEOX (halves)
  falcon: 'neox',
  grok: 'neox',
  dbrx: 'neox',
  stablelm: 'neox',
  bitnet: 'neox',
  qwen: 'neox',
  qwen2: 'neox',
  qwen2moe: 'neox',
  qwen3: 'neox',
  qwen3moe: 'neox',
  olmo2: 'neox',
  olmoe: 'neox',
  phi2: 'neox',
  phi3: 'neox',
  phimoe: 'neox',
  gemma: 'neox',
  starcoder2: 'neox',
  openelm: 'neox',
  gptneox: 'neox',
  codeshell: 'neox',
  nemotron: 'neox',
  exaone: 'neox',
  // no rotary embedding on keys
  gpt2: 'none',
  mpt: 'none',
  refact: 'none',
  bloom: 'none',
  jais: 'none',
};

/** Architectures whose state is (partly) recurrent: no per-token KV cache to code. */
const RECURRENT = new Set(['mamba', 'mamba2', 'rwkv6', 'rwkv6qwen2', 'rwkv7', 'arwkv7']);
/** Architectures mixing attention layers with recurrent (SSM / conv) layers. */
const HYBRID = new Set(['jamba', 'falcon-h1', 'granitehybrid', 'lfm2', 'plamo2', 'nemotron_h', 'qwen3next']);
/** Architectures llama.cpp runs with sliding-window (or chunked) attention in some or all layers. */
const SLIDING = new Set(['gemma2', 'gemma3', 'gemma3n', 'cohere2', 'llama4', 'gpt-oss', 'exaone4']);
/** Multi-head latent attention: the cache holds a compressed latent, not per-head K and V. */
const MLA = new Set(['deepseek2']);
/** Multi-section rotary positions (vision-language models). */
const MROPE = new Set(['qwen2vl', 'qwen25vl', 'qwen3vl', 'qwen3vlmoe']);

interface ArchMeta {
  block_count?: number;
  embedding_length?: number;
  attention?: {
    head_count?: number | number[];
    head_count_kv?: number | number[];
    key_length?: number;
    value_length?: number;
    sliding_window?: number;
    sliding_window_pattern?: number | number[];
    kv_lora_rank?: number;
  };
  rope?: {
    dimension_count?: number;
    freq_base?: number;
    scale_linear?: number;
    scaling?: { type?: string; factor?: number };
  };
  ssm?: unknown;
  wkv?: unknown;
}

/** The parts of a GGUF file's info (node-llama-cpp `GgufFileInfo`) the layout needs. */
export interface GgufInfoLike {
  metadata: unknown;
  tensorInfo?: readonly { name: string; dimensions: readonly (number | bigint)[]; ggmlType: number; fileOffset: number | bigint; filePart?: number }[];
}

function refuse(arch: string, reason: string): never {
  throw new KvtcError('E_LAYOUT', `cannot store the KV cache of this ${arch} model: ${reason}`);
}

function positive(v: unknown): v is number {
  return typeof v === 'number' && Number.isInteger(v) && v > 0;
}

/** The architecture name a GGUF file declares. */
export function ggufArchitecture(info: GgufInfoLike): string {
  const arch = (info.metadata as { general?: { architecture?: unknown } })?.general?.architecture;
  if (typeof arch !== 'string' || arch.length === 0) throw new KvtcError('E_LAYOUT', 'the GGUF metadata names no general.architecture');
  return arch;
}

/** Reads `rope_freqs.weight` (llama-3 style per-pair frequency factors, F32) from the model file. */
function readRopeFactors(path: string, offset: number, count: number): Float32Array {
  const out = new Float32Array(count);
  const fd = openSync(path, 'r');
  try {
    const buf = new Uint8Array(out.buffer);
    if (readSync(fd, buf, 0, buf.length, offset) !== buf.length) throw new KvtcError('E_IO', `${path}: rope_freqs.weight is truncated`);
  } finally {
    closeSync(fd);
  }
  return out;
}

/**
 * The RoPE spec llama.cpp uses for keys of this model, or undefined when keys are not rotated.
 * Linear scaling and llama-3 frequency factors become an explicit `freqs` table; other scalings
 * (YaRN, LongRoPE) also change key magnitudes and are refused.
 */
function ropeSpec(arch: string, a: ArchMeta, headDim: number, info: GgufInfoLike, path: string | undefined): RopeSpec | undefined {
  const style = ROPE_STYLE[arch];
  if (style === undefined) {
    if (MROPE.has(arch)) refuse(arch, 'multi-section rotary positions (M-RoPE) are not supported');
    refuse(arch, `architecture '${arch}' is not in the adapter's table of llama.cpp rope types; pass a layout explicitly if you know it`);
  }
  if (style === 'none') return undefined;
  const dims = a.rope?.dimension_count ?? headDim;
  if (!positive(dims) || dims > headDim || dims % 2 !== 0) refuse(arch, `rope.dimension_count ${String(dims)} does not fit a head of ${headDim}`);
  const theta = a.rope?.freq_base ?? 10000;
  const scaling = a.rope?.scaling?.type ?? 'none';
  let scale = 1;
  if (scaling === 'linear') {
    const factor = a.rope?.scaling?.factor ?? 1;
    if (!(factor > 0)) refuse(arch, `linear rope scaling with factor ${String(factor)}`);
    scale = 1 / factor;
  } else if (scaling !== 'none') {
    refuse(arch, `rope scaling '${scaling}' (only none and linear can be undone exactly)`);
  }
  if (a.rope?.scale_linear !== undefined && a.rope.scale_linear !== 1) {
    if (!(a.rope.scale_linear > 0)) refuse(arch, `rope.scale_linear ${a.rope.scale_linear}`);
    scale = 1 / a.rope.scale_linear;
  }
  const factors = info.tensorInfo?.find((t) => t.name === 'rope_freqs.weight');
  if (scale === 1 && !factors) return { theta, style, dims };
  let div: Float32Array | undefined;
  if (factors) {
    if (factors.ggmlType !== 0 || Number(factors.dimensions[0]) !== dims / 2 || (factors.filePart ?? 1) !== 1) {
      refuse(arch, 'rope_freqs.weight is not an F32 vector of rope.dimension_count / 2 factors in the first file part');
    }
    if (!path) refuse(arch, 'the model has rope frequency factors (rope_freqs.weight) but its file path is unknown');
    div = readRopeFactors(path, Number(factors.fileOffset), dims / 2);
  }
  // llama.cpp: angle = pos * freq_scale * theta^(-2i/n_rot) / factor_i.
  const freqs = new Float32Array(dims / 2);
  for (let i = 0; i < dims / 2; i++) freqs[i] = (scale * Math.pow(theta, (-2 * i) / dims)) / (div ? div[i]! : 1);
  if (!freqs.every((f) => Number.isFinite(f) && f > 0)) refuse(arch, 'rope frequency factors are not positive and finite');
  return { theta, style, dims, freqs };
}

/**
 * Refuses (E_LAYOUT, naming the reason) models whose cache is not one full-attention K and V per
 * layer: recurrent or hybrid architectures, sliding-window layers, MLA. Holds even when the
 * caller supplies its own layout. Returns the architecture name.
 */
export function assertRepresentable(info: GgufInfoLike): string {
  const arch = ggufArchitecture(info);
  const a = (info.metadata as Record<string, unknown>)[arch] as ArchMeta | undefined;
  if (RECURRENT.has(arch) || a?.wkv !== undefined) refuse(arch, 'its state is recurrent (no per-token KV cache)');
  if (HYBRID.has(arch) || a?.ssm !== undefined) refuse(arch, 'it mixes attention with recurrent layers (hybrid cache)');
  if (MLA.has(arch) || (a?.attention?.kv_lora_rank ?? 0) > 0) refuse(arch, 'it uses multi-head latent attention (MLA: kv_lora_rank), whose cache is a latent, not per-head K and V');
  const window = a?.attention?.sliding_window ?? 0;
  if (SLIDING.has(arch) || window > 0 || a?.attention?.sliding_window_pattern !== undefined) {
    refuse(arch, `it has sliding-window attention layers${window > 0 ? ` (sliding_window ${window})` : ''}, whose cache keeps only a window of tokens`);
  }
  const kv = a?.attention?.head_count_kv;
  if (Array.isArray(kv) && new Set(kv).size > 1) refuse(arch, `its layers have different KV head counts (head_count_kv ${JSON.stringify(kv)})`);
  return arch;
}

/**
 * The KvLayout of a GGUF model's KV cache, from its metadata (and, for llama-3 rope factors,
 * one small tensor of the file at `path`).
 *
 * @param dtype the cache's element dtype (kvtc side; quantized llama.cpp caches are 'f32').
 * @throws KvtcError E_LAYOUT naming the reason for models whose cache is not one full-attention
 *   K and V per layer of equal head counts and sizes: recurrent or hybrid architectures,
 *   sliding-window layers, MLA, per-layer KV head counts, K and V of different head sizes,
 *   YaRN / LongRoPE scaling, unknown architectures.
 */
export function kvLayoutFromGguf(info: GgufInfoLike, dtype: DType = 'f16', path?: string): KvLayout {
  const arch = assertRepresentable(info);
  const a = (info.metadata as Record<string, unknown>)[arch] as ArchMeta | undefined;
  const layers = a?.block_count;
  const headsRaw = a?.attention?.head_count;
  const kvRaw = a?.attention?.head_count_kv ?? headsRaw;
  if (Array.isArray(headsRaw) && new Set(headsRaw).size > 1) refuse(arch, 'its layers have different head counts');
  const heads = Array.isArray(headsRaw) ? headsRaw[0] : headsRaw;
  const kvHeads = Array.isArray(kvRaw) ? kvRaw[0] : kvRaw;
  const headDim = a?.attention?.key_length ?? (a?.embedding_length && heads ? a.embedding_length / heads : undefined);
  if (!positive(layers) || !positive(kvHeads) || !positive(headDim)) {
    throw new KvtcError('E_LAYOUT', `cannot derive a KV layout from the metadata of this ${arch} model; pass a layout explicitly`);
  }
  const vDim = a?.attention?.value_length ?? headDim;
  if (vDim !== headDim) refuse(arch, `K heads of ${headDim} and V heads of ${vDim} values differ in size`);
  const layout: KvLayout = { layers, kvHeads, headDim, dtype };
  const rope = ropeSpec(arch, a!, headDim, info, path);
  if (rope) layout.rope = rope;
  return layout;
}
