/**
 * How faithfully a restored cache lets a real model continue: next-token distributions of a
 * sequence resumed from a (compressed) cache against one resumed from the exact cache, teacher-
 * forced over the same continuation. KL(reference || restored) and top-1 agreement per step.
 */
import type { LlamaContextSequence, LlamaModel, Token } from 'node-llama-cpp';
import type { KvCache } from '../../layout.js';
import { type ContextSettings, createContext, withPromptSequence } from './collect.js';
import { modelKvLayout } from './model.js';
import { readSequenceState, writeSequenceStateTo } from './sequence-state.js';
import type { LlamaSequenceState } from './state.js';

export interface NextTokenComparison {
  /** Steps compared. */
  steps: number;
  /** Mean and max of KL(reference || candidate) in nats over the steps. */
  meanKl: number;
  maxKl: number;
  /** Fraction of steps whose most likely next token is the same. */
  top1Agreement: number;
}

/** node-llama-cpp returns the whole vocabulary's probabilities as a Map; make it an array. */
function dense(probs: ReadonlyMap<Token, number>): Float64Array {
  let vocab = 0;
  for (const t of probs.keys()) vocab = Math.max(vocab, (t as number) + 1);
  const out = new Float64Array(vocab);
  for (const [t, p] of probs) out[t as number] = p;
  return out;
}

function argmax(p: Float64Array): number {
  let best = 0;
  for (let i = 1; i < p.length; i++) if (p[i]! > p[best]!) best = i;
  return best;
}

/** KL(p || q) in nats; q is floored so a zero where p has mass stays finite (and large). */
export function klDivergence(p: Float64Array, q: Float64Array): number {
  let kl = 0;
  for (let i = 0; i < p.length; i++) if (p[i]! > 0) kl += p[i]! * Math.log(p[i]! / Math.max(q[i]!, 1e-12));
  return Math.max(0, kl);
}

/** Next-token distributions after each input token (teacher forcing), as dense arrays. */
export async function nextTokenDistributions(seq: LlamaContextSequence, input: Token[]): Promise<Float64Array[]> {
  const out = await seq.controlledEvaluate(input.map((t) => [t, { generateNext: { probabilities: true } }]));
  return input.map((_, i) => dense(out[i]!.next!.probabilities!));
}

/** Greedy continuation: feeds `first`, then each argmax, `steps` times; returns the tokens and distributions. */
export async function greedyContinue(seq: LlamaContextSequence, first: Token, steps: number): Promise<{ tokens: Token[]; probs: Float64Array[] }> {
  const tokens: Token[] = [];
  const probs: Float64Array[] = [];
  let next = first;
  for (let i = 0; i < steps; i++) {
    const [p] = await nextTokenDistributions(seq, [next]);
    probs.push(p!);
    next = argmax(p!) as Token;
    tokens.push(next);
  }
  return { tokens, probs };
}

export function compareDistributions(ref: Float64Array[], cand: Float64Array[]): NextTokenComparison {
  let sum = 0;
  let max = 0;
  let agree = 0;
  for (let i = 0; i < ref.length; i++) {
    const kl = klDivergence(ref[i]!, cand[i]!);
    sum += kl;
    max = Math.max(max, kl);
    if (argmax(ref[i]!) === argmax(cand[i]!)) agree++;
  }
  return { steps: ref.length, meanKl: sum / ref.length, maxKl: max, top1Agreement: agree / ref.length };
}

/** A prefix ready for fidelity runs: its exact state (all but the last token) and the reference continuation. */
export interface FidelityProbe {
  /** State of the prefix without its last token (whose logits start the continuation). */
  state: LlamaSequenceState;
  lastToken: Token;
  /** Greedy continuation from the exact cache, and the reference distributions along it. */
  continuation: Token[];
  reference: Float64Array[];
}

/**
 * Runs `prompt` to `prefixTokens` tokens and records the exact state and a `steps`-token
 * greedy continuation (the uncompressed reference run).
 */
export async function makeProbe(
  model: LlamaModel,
  prompt: string,
  prefixTokens: number,
  steps: number,
  settings: ContextSettings = {},
): Promise<FidelityProbe> {
  const layout = modelKvLayout(model);
  const { state, lastToken } = await withPromptSequence(model, prompt, { tokens: prefixTokens, ...settings }, async (seq) => {
    const last = seq.contextTokens.at(-1)!;
    await seq.eraseContextTokenRanges([{ start: prefixTokens - 1, end: prefixTokens }]);
    return { state: await readSequenceState(seq, layout), lastToken: last };
  });
  const run = await resumeWith(model, state, prefixTokens + steps + 8, settings, (seq) =>
    greedyContinue(seq, lastToken, steps),
  );
  return { state, lastToken, continuation: run.tokens, reference: run.probs };
}

/** Loads a state (optionally with another cache) into a fresh sequence and runs fn on it. */
export async function resumeWith<T>(
  model: LlamaModel,
  state: LlamaSequenceState,
  contextSize: number,
  settings: ContextSettings,
  fn: (seq: LlamaContextSequence) => Promise<T>,
  cache?: KvCache,
): Promise<T> {
  const context = await createContext(model, contextSize, settings);
  try {
    const seq = context.getSequence();
    await writeSequenceStateTo(seq, cache ? { ...state, cache } : state);
    return await fn(seq);
  } finally {
    await context.dispose();
  }
}

/** Teacher-forced comparison of a restored cache against the probe's reference run. */
export async function probeFidelity(model: LlamaModel, probe: FidelityProbe, restored: KvCache, settings: ContextSettings = {}): Promise<NextTokenComparison> {
  const input = [probe.lastToken, ...probe.continuation.slice(0, -1)];
  const cand = await resumeWith(
    model,
    probe.state,
    probe.state.cache.tokens + input.length + 8,
    settings,
    (seq) => nextTokenDistributions(seq, input),
    restored,
  );
  return compareDistributions(probe.reference, cand);
}
