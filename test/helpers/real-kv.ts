/**
 * Real KV caches for tests and benches: runs the stories260K model (shared/models) through
 * node-llama-cpp on the CPU, saves each sequence's state with `saveStateToFile` and parses it
 * with the llama.cpp adapter. stories260K is tiny (260K parameters), so a 300-token cache takes
 * a few hundred milliseconds to produce.
 */
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { withPromptSequence } from '../../src/adapters/llama-cpp/collect.js';
import { type LoadedModel, loadLlamaModel } from '../../src/adapters/llama-cpp/model.js';
import { readSequenceFile } from '../../src/adapters/llama-cpp/sequence-state.js';
import { parseSequenceState } from '../../src/adapters/llama-cpp/state.js';
import type { LlamaSequenceState } from '../../src/adapters/llama-cpp/state.js';
import type { DType, KvCache, KvLayout } from '../../src/layout.js';

/** The repository root (this file lives in test/helpers). */
const REPO_ROOT = fileURLToPath(new URL('../../', import.meta.url));

/** stories260K in GGUF form (all tensors F32), from the shared folder next to the repository. */
export const MODEL_PATH = resolve(REPO_ROOT, '../shared/models/stories260K.gguf');
/** One prompt per line. */
export const PROMPTS_PATH = resolve(REPO_ROOT, '../shared/data/prompts.txt');

/** The non-empty, trimmed lines of PROMPTS_PATH. */
export function loadPrompts(): string[] {
  return readFileSync(PROMPTS_PATH, 'utf8')
    .split(/\r?\n/)
    .map((l) => l.trim())
    .filter((l) => l.length > 0);
}

/**
 * stories260K's KV layout: 5 layers, 4 KV heads of 8 (kv_dim 32), RoPE theta 10000 over the
 * whole head with adjacent pairs (llama.cpp normal mode). `dtype` here is 'f32'; the caches
 * from `realCaches` carry the dtype of the cache type they were made with (see storiesLayout).
 */
export const STORIES_LAYOUT: KvLayout = storiesLayout('f32');

/** STORIES_LAYOUT with the given dtype. */
export function storiesLayout(dtype: DType): KvLayout {
  return { layers: 5, kvHeads: 4, headDim: 8, dtype, rope: { theta: 10000, style: 'interleaved' } };
}

export interface RealKvOptions {
  /** One cache per prompt, in order. */
  prompts: string[];
  /** KV cells each cache holds: BOS + prompt tokens, then generated ones (prompt cut if longer). */
  tokens: number;
  /** llama.cpp KV cache type for K and V; default 'f32'. */
  cacheType?: 'f32' | 'f16';
  /**
   * Flash attention on stores V token-major (v_trans 0), off stores it transposed (v_trans 1);
   * default false.
   */
  flashAttention?: boolean;
  /** Sample with temperature 0.8 and this seed; without it, decoding is greedy. */
  seed?: number;
}

/** One real state file and its parse. */
export interface RealState {
  prompt: string;
  /** The file exactly as llama.cpp wrote it. */
  bytes: Uint8Array;
  state: LlamaSequenceState;
}

let loaded: Promise<LoadedModel> | undefined;
const memo = new Map<string, Promise<RealState[]>>();

/** The shared model, loaded once per process. */
export function sharedModel(): Promise<LoadedModel> {
  loaded ??= loadLlamaModel(MODEL_PATH);
  // A failed load must not poison later calls.
  loaded.catch(() => {
    loaded = undefined;
  });
  return loaded;
}

/** Frees the model and the llama.cpp instance (for afterAll hooks); a later call reloads them. */
export async function disposeModel(): Promise<void> {
  const p = loaded;
  loaded = undefined;
  const l = await p?.catch(() => undefined);
  await l?.dispose();
}

async function makeStates(opts: RealKvOptions): Promise<RealState[]> {
  const { model } = await sharedModel();
  const cacheType = opts.cacheType ?? 'f32';
  const layout = storiesLayout(cacheType);
  const out: RealState[] = [];
  for (const prompt of opts.prompts) {
    const bytes = await withPromptSequence(model, prompt, { ...opts, cacheType, flashAttention: opts.flashAttention ?? false }, readSequenceFile);
    const state = parseSequenceState(bytes, layout.rope, { kvHeads: layout.kvHeads, headDim: layout.headDim });
    out.push({ prompt, bytes, state });
  }
  return out;
}

/**
 * Real sequence-state files and their parses, one per prompt. Memoized per process by options:
 * the results are shared, so treat them as read-only.
 */
export function realStates(opts: RealKvOptions): Promise<RealState[]> {
  const key = JSON.stringify([opts.prompts, opts.tokens, opts.cacheType ?? 'f32', opts.flashAttention ?? false, opts.seed ?? null]);
  let p = memo.get(key);
  if (!p) {
    p = makeStates(opts);
    memo.set(key, p);
    p.catch(() => memo.delete(key));
  }
  return p;
}

/**
 * Real KV caches of stories260K, one per prompt, each holding `opts.tokens` tokens at positions
 * 0..tokens-1, with layout storiesLayout(cacheType). Memoized per process by options: the
 * caches are shared, so treat them as read-only.
 */
export async function realCaches(opts: RealKvOptions): Promise<KvCache[]> {
  return (await realStates(opts)).map((s) => s.state.cache);
}
