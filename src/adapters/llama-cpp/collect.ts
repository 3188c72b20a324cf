/**
 * Real KV caches from a model: run prompts (continuing each to a target length) and read the
 * resulting caches. Used for calibration (calibrateFromModel, `kvtc calibrate`), tests and
 * benchmarks.
 */
import type { LlamaContext, LlamaContextSequence, LlamaModel, Token } from 'node-llama-cpp';
import { KvtcError } from '../../errors.js';
import type { KvLayout } from '../../layout.js';
import { calibrate } from '../../codec/calibrate.js';
import type { CodecProfile } from '../../codec/profile.js';
import type { CalibrateOptions } from '../../options.js';
import { fingerprintOf } from './fingerprint.js';
import { loadLlamaModel, modelKvLayout } from './model.js';
import { bindProfileToModel } from './profile-binding.js';
import { readSequenceState } from './sequence-state.js';
import type { LlamaSequenceState } from './state.js';

/** KV cache element types llama.cpp runs and this adapter reads and writes. */
export type KvCacheType = 'f32' | 'f16' | 'bf16' | 'q8_0' | 'q4_0';

const GGML_NAMES: Record<KvCacheType, 'F32' | 'F16' | 'BF16' | 'Q8_0' | 'Q4_0'> = { f32: 'F32', f16: 'F16', bf16: 'BF16', q8_0: 'Q8_0', q4_0: 'Q4_0' };

export interface CollectOptions {
  /** One cache per prompt, in order. */
  prompts: string[];
  /** KV cells each cache holds: BOS + prompt tokens, then generated ones (the prompt is cut if longer). */
  tokens: number;
  /**
   * llama.cpp KV cache type (`--cache-type-k/v`) for K and V. Default 'f16' (llama.cpp's
   * default). Quantized types need head sizes that are multiples of 32.
   */
  cacheType?: KvCacheType;
  /** V cache type when it differs from K's (default: cacheType). Quantized V needs flash attention. */
  valueCacheType?: KvCacheType;
  /**
   * Flash attention (V stored untransposed, v_trans 0) or not (v_trans 1). Default: on when V
   * is quantized (llama.cpp requires it), off otherwise.
   */
  flashAttention?: boolean;
  /** Sample continuations at temperature 0.8 with this seed; default greedy. */
  seed?: number;
  /** Threads per context. Default 1 (small models are far slower with more threads than cores). */
  threads?: number;
  /** Called after each prompt. */
  onProgress?: (done: number, total: number) => void;
}

function checkCollect(model: LlamaModel, opts: CollectOptions): void {
  if (!Array.isArray(opts.prompts) || opts.prompts.some((p) => typeof p !== 'string')) {
    throw new KvtcError('E_OPTIONS', 'options.prompts must be an array of strings');
  }
  if (!Number.isInteger(opts.tokens) || opts.tokens < 1 || opts.tokens > model.trainContextSize) {
    throw new KvtcError('E_OPTIONS', `options.tokens must be an integer in 1..${model.trainContextSize}, got ${String(opts.tokens)}`);
  }
}

/** Context settings a saved sequence state depends on (cache types, attention layout). */
export type ContextSettings = Pick<CollectOptions, 'cacheType' | 'valueCacheType' | 'flashAttention' | 'threads'>;

function ggmlName(t: KvCacheType | undefined, field: string): 'F32' | 'F16' | 'BF16' | 'Q8_0' | 'Q4_0' {
  const name = GGML_NAMES[t ?? 'f16'];
  if (!name) throw new KvtcError('E_OPTIONS', `options.${field} must be one of ${Object.keys(GGML_NAMES).join(', ')}, got ${String(t)}`);
  return name;
}

/** A single-sequence context; states saved from one load into another with the same settings. */
export async function createContext(model: LlamaModel, contextSize: number, s: ContextSettings): Promise<LlamaContext> {
  const k = ggmlName(s.cacheType, 'cacheType');
  const v = ggmlName(s.valueCacheType ?? s.cacheType, 'valueCacheType');
  const quantizedV = v === 'Q8_0' || v === 'Q4_0';
  if (k === 'Q8_0' || k === 'Q4_0' || quantizedV) {
    // llama.cpp quantizes each head in blocks of 32 values; say so instead of "failed to create context".
    const a = (model.fileInfo.metadata as unknown as Record<string, { embedding_length?: number; attention?: { head_count?: number; key_length?: number } }>)[
      model.fileInfo.metadata.general.architecture as string
    ];
    const headDim = a?.attention?.key_length ?? (a?.embedding_length && a.attention?.head_count ? a.embedding_length / a.attention.head_count : undefined);
    if (headDim !== undefined && headDim % 32 !== 0) {
      throw new KvtcError('E_OPTIONS', `${quantizedV ? v : k} caches need heads of a multiple of 32 values; this model's heads have ${headDim}`);
    }
  }
  if (quantizedV && s.flashAttention === false) {
    throw new KvtcError('E_OPTIONS', `a ${v} V cache needs flash attention (llama.cpp refuses quantized V without it)`);
  }
  return model.createContext({
    contextSize,
    sequences: 1,
    threads: s.threads ?? 1,
    flashAttention: s.flashAttention ?? quantizedV,
    experimentalKvCacheKeyType: k,
    experimentalKvCacheValueType: v,
  });
}

/**
 * Runs one prompt in a fresh single-sequence context until the sequence holds `opts.tokens`
 * tokens, then hands the sequence to `fn`; the context is disposed afterwards.
 *
 * Models end their text (an end-of-generation token) whenever they like, long before
 * `opts.tokens` in a chat model's case. The sequence then goes on as a conversation would: the
 * end token stays in the cache, the next of `followUps` (default: the prompt again) is
 * evaluated after it, and generation resumes, until the cache holds what was asked.
 */
export async function withPromptSequence<T>(
  model: LlamaModel,
  prompt: string,
  opts: Omit<CollectOptions, 'prompts' | 'onProgress'> & { followUps?: readonly string[] },
  fn: (sequence: LlamaContextSequence) => Promise<T>,
): Promise<T> {
  const context = await createContext(model, opts.tokens + 64, opts);
  try {
    const seq = context.getSequence();
    const target = opts.tokens;
    const bos = model.tokens.bos;
    const followUps = opts.followUps && opts.followUps.length > 0 ? opts.followUps : [prompt];
    let input: Token[] = [...(bos !== null ? [bos] : []), ...model.tokenize(prompt)];
    const sampling = opts.seed === undefined ? { temperature: 0 } : { temperature: 0.8, seed: opts.seed };
    for (let round = 0; seq.nextTokenIndex < target; round++) {
      input = input.slice(0, target - seq.nextTokenIndex);
      if (input.length === 0) throw new KvtcError('E_INTERNAL', `no input to continue the sequence at ${seq.nextTokenIndex} of ${target} tokens`);
      const before = seq.nextTokenIndex;
      let ended: Token | undefined;
      // A sampled token enters the cache only when the loop asks for the next one: stop as
      // soon as the cache holds `target` cells, or when the model ends its text.
      for await (const token of seq.evaluate(input, { ...sampling, yieldEogToken: true })) {
        if (seq.nextTokenIndex >= target) break;
        if (model.isEogToken(token)) {
          ended = token;
          break;
        }
      }
      if (seq.nextTokenIndex >= target) break;
      if (ended === undefined || seq.nextTokenIndex <= before) {
        throw new KvtcError('E_INTERNAL', `generation stopped at ${seq.nextTokenIndex} of ${target} tokens without an end-of-generation token`);
      }
      input = [ended, ...model.tokenize(followUps[round % followUps.length]!)];
    }
    if (seq.nextTokenIndex !== target) {
      throw new KvtcError('E_INTERNAL', `sequence holds ${seq.nextTokenIndex} tokens, expected ${target}`);
    }
    return await fn(seq);
  } finally {
    await context.dispose();
  }
}

/** Runs each prompt in a fresh context and returns the sequence states (KV cache + token ids). */
export async function collectStates(model: LlamaModel, opts: CollectOptions, layout = modelKvLayout(model)): Promise<LlamaSequenceState[]> {
  checkCollect(model, opts);
  const out: LlamaSequenceState[] = [];
  const prompts = opts.prompts;
  for (const [i, prompt] of prompts.entries()) {
    // After an end of text, the sequence continues with the next prompts (as a chat would).
    const followUps = [...prompts.slice(i + 1), ...prompts.slice(0, i + 1)];
    out.push(await withPromptSequence(model, prompt, { ...opts, followUps }, (seq) => readSequenceState(seq, layout)));
    opts.onProgress?.(i + 1, opts.prompts.length);
  }
  return out;
}

export interface CalibrateFromModelOptions extends CollectOptions {
  /** Path of a GGUF model (loaded for the call) — or pass `model`. */
  modelPath?: string;
  model?: LlamaModel;
  /** The model's KV layout; default: read from the GGUF metadata. */
  layout?: KvLayout;
  /** Options of calibrate() (ratio, PCA group, ...). */
  calibration?: CalibrateOptions;
}

/**
 * Runs prompts through a model and calibrates a profile on the caches they leave. The profile
 * is bound to the model's fingerprint (profileModel / bindProfileToModel): saveSequence refuses
 * sequences of another model for a store with this profile.
 */
export async function calibrateFromModel(opts: CalibrateFromModelOptions): Promise<CodecProfile> {
  if (!opts.model && !opts.modelPath) throw new KvtcError('E_OPTIONS', 'options.modelPath or options.model is required');
  const loaded = opts.model ? undefined : await loadLlamaModel(opts.modelPath!);
  try {
    const model = opts.model ?? loaded!.model;
    const layout = opts.layout ?? modelKvLayout(model);
    const fingerprint = await fingerprintOf(model);
    const states = await collectStates(model, opts, layout);
    const profile = await calibrate(
      states.map((s) => s.cache),
      opts.calibration,
    );
    bindProfileToModel(profile, fingerprint);
    return profile;
  } finally {
    await loaded?.dispose();
  }
}
