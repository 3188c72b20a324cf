/**
 * Real KV caches for tests and benches: runs the stories260K model (shared/models) through
 * node-llama-cpp on the CPU, saves each sequence's state with `saveStateToFile` and parses it
 * with the llama.cpp adapter. stories260K is tiny (260K parameters), so a 300-token cache takes
 * a few hundred milliseconds to produce.
 */
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { getLlama, LlamaLogLevel } from 'node-llama-cpp';
import type { Llama, LlamaModel, Token } from 'node-llama-cpp';
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

interface Loaded {
  llama: Llama;
  model: LlamaModel;
}

let loaded: Promise<Loaded> | undefined;
const memo = new Map<string, Promise<RealState[]>>();

function loadModel(): Promise<Loaded> {
  loaded ??= (async () => {
    const llama = await getLlama({
      gpu: false,
      // Use the prebuilt CPU binary that ships with node-llama-cpp; never compile or download.
      build: 'never',
      skipDownload: true,
      usePrebuiltBinaries: true,
      progressLogs: false,
      logLevel: LlamaLogLevel.error,
      logger: (level, message) => {
        if (level === LlamaLogLevel.error || level === LlamaLogLevel.fatal) console.error(`[llama.cpp] ${message}`);
      },
    });
    try {
      const model = await llama.loadModel({ modelPath: MODEL_PATH, gpuLayers: 0 });
      return { llama, model };
    } catch (err) {
      await llama.dispose();
      throw err;
    }
  })();
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
  if (!p) return;
  const l = await p.catch(() => undefined);
  if (!l) return;
  await l.model.dispose();
  await l.llama.dispose();
}

function checkOptions(opts: RealKvOptions): void {
  if (!Array.isArray(opts.prompts) || opts.prompts.some((p) => typeof p !== 'string')) {
    throw new TypeError('prompts must be an array of strings');
  }
  if (!Number.isInteger(opts.tokens) || opts.tokens < 1 || opts.tokens > 1984) {
    // 2048 is the model's trained context; stay clear of it with the context's slack.
    throw new RangeError(`tokens must be an integer in 1..1984, got ${String(opts.tokens)}`);
  }
}

async function makeStates(opts: RealKvOptions): Promise<RealState[]> {
  const { model } = await loadModel();
  const cacheType = opts.cacheType ?? 'f32';
  const ggml = cacheType === 'f32' ? 'F32' : 'F16';
  const flash = opts.flashAttention ?? false;
  const dir = await mkdtemp(join(tmpdir(), 'kvtc-real-kv-'));
  try {
    const out: RealState[] = [];
    for (const [i, prompt] of opts.prompts.entries()) {
      const context = await model.createContext({
        contextSize: opts.tokens + 64,
        sequences: 1,
        // More threads than cores makes this tiny model 100-1000x slower (shared/models/README.md).
        threads: 1,
        flashAttention: flash,
        experimentalKvCacheKeyType: ggml,
        experimentalKvCacheValueType: ggml,
      });
      try {
        const seq = context.getSequence();
        const bos = model.tokens.bos;
        let input: Token[] = [...(bos !== null ? [bos] : []), ...model.tokenize(prompt)];
        if (input.length >= opts.tokens) {
          input = input.slice(0, opts.tokens);
          await seq.evaluateWithoutGeneratingNewTokens(input);
        } else {
          const sampling = opts.seed === undefined ? { temperature: 0 } : { temperature: 0.8, seed: opts.seed };
          // Each step yields a sampled token that is evaluated (enters the KV cache) only when the
          // loop asks for the next one, so stop as soon as the cache holds `tokens` cells.
          for await (const _token of seq.evaluate(input, sampling)) {
            if (seq.nextTokenIndex >= opts.tokens) break;
          }
        }
        if (seq.nextTokenIndex !== opts.tokens) {
          throw new Error(`real-kv: sequence holds ${seq.nextTokenIndex} tokens, expected ${opts.tokens}`);
        }
        const file = join(dir, `seq-${i}.bin`);
        await seq.saveStateToFile(file);
        const bytes = new Uint8Array(await readFile(file));
        await rm(file, { force: true });
        const layout = storiesLayout(cacheType);
        const state = parseSequenceState(bytes, layout.rope, { kvHeads: layout.kvHeads, headDim: layout.headDim });
        out.push({ prompt, bytes, state });
      } finally {
        await context.dispose();
      }
    }
    return out;
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/**
 * Real sequence-state files and their parses, one per prompt. Memoized per process by options:
 * the results are shared, so treat them as read-only.
 */
export function realStates(opts: RealKvOptions): Promise<RealState[]> {
  checkOptions(opts);
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
