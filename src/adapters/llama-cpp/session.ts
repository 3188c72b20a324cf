/**
 * Saving a node-llama-cpp context sequence into a KvStore and restoring it into a (possibly
 * fresh) sequence, so a conversation resumes without recomputing its prefix.
 */
import type { LlamaContextSequence } from 'node-llama-cpp';
import type { KvLayout } from '../../layout.js';
import type { KvStore, PutOptions } from '../../store/store.js';
import type { Tier } from '../../store/session.js';
import { decodeExtras, encodeExtras, readSequenceState, stateFor, writeSequenceStateTo } from './sequence-state.js';

/**
 * Stores the sequence's KV cache (and the token ids llama.cpp needs to resume) under `id`.
 * `layout` is the model's KV layout (see modelKvLayout); its dtype is taken from the state.
 */
export async function saveSequence(
  store: KvStore,
  id: string,
  sequence: LlamaContextSequence,
  layout: KvLayout,
  options: Omit<PutOptions, 'attachment'> = {},
): Promise<{ tokens: number }> {
  const state = await readSequenceState(sequence, layout);
  await store.put(id, state.cache, { ...options, attachment: encodeExtras({ tokens: state.tokens, vTrans: state.vTrans }) });
  return { tokens: state.cache.tokens };
}

/**
 * Loads session `id` from the store into `sequence` (replacing its contents). Returns the tier
 * it came from and its token ids, or undefined when the store does not have it. The sequence's
 * context must use the same model and attention settings (flash attention on or off) as the one
 * the session was saved from.
 */
export async function restoreSequence(
  store: KvStore,
  id: string,
  sequence: LlamaContextSequence,
): Promise<{ tier: Tier; tokens: Int32Array } | undefined> {
  const entry = await store.getEntry(id);
  if (!entry) return undefined;
  const extras = decodeExtras(entry.attachment);
  await writeSequenceStateTo(sequence, stateFor(entry.cache, extras));
  return { tier: entry.tier, tokens: extras.tokens };
}
