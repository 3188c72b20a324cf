/**
 * Saving a node-llama-cpp context sequence into a KvStore and restoring it into a (possibly
 * fresh) sequence, so a conversation resumes without recomputing its prefix. Each session
 * carries the fingerprint of the model that computed it and is only restored into that model.
 */
import type { LlamaContextSequence } from 'node-llama-cpp';
import { KvtcError } from '../../errors.js';
import type { KvLayout } from '../../layout.js';
import type { KvStore, PutOptions } from '../../store/store.js';
import type { Tier } from '../../store/session.js';
import { assertRepresentable } from './architecture.js';
import { fingerprintOf } from './fingerprint.js';
import { modelKvLayout } from './model.js';
import { profileModel } from './profile-binding.js';
import { decodeExtras, encodeExtras, readSequenceState, stateFor, writeSequenceStateTo } from './sequence-state.js';

/**
 * Stores the sequence's KV cache (and the token ids, cache types and model fingerprint llama.cpp
 * needs to resume it) under `id`. `layout` is the model's KV layout (default: modelKvLayout of
 * the sequence's model); its dtype is taken from the state (F32/F16/BF16 caches keep their
 * dtype, Q8_0/Q4_0 or mixed K/V types are held as f32).
 *
 * @throws KvtcError E_PROFILE_MISMATCH when the store's profile was calibrated through this
 *   adapter on another model; E_LAYOUT for a cache kvtc cannot represent.
 */
export async function saveSequence(
  store: KvStore,
  id: string,
  sequence: LlamaContextSequence,
  layout: KvLayout = modelKvLayout(sequence.model),
  options: Omit<PutOptions, 'attachment' | 'tokens'> = {},
): Promise<{ tokens: number }> {
  // Even with a caller-supplied layout, a cache that is not one full-attention K and V per layer
  // (sliding window, recurrent, MLA) is refused before anything is read or stored.
  assertRepresentable(sequence.model.fileInfo);
  const model = await fingerprintOf(sequence.model);
  const bound = profileModel(store.profile);
  if (bound !== undefined && bound !== model) {
    throw new KvtcError('E_PROFILE_MISMATCH', `the store's profile was calibrated on model ${bound}, this sequence runs model ${model}`);
  }
  const state = await readSequenceState(sequence, layout);
  const attachment = encodeExtras({ tokens: state.tokens, vTrans: state.vTrans, kType: state.kType!, vType: state.vType!, model });
  // The token ids make the session's prefixes findable (restorePrefix): cell i holds token i
  // when the cache is one contiguous sequence from position 0.
  const positions = state.cache.positions;
  const contiguous = state.tokens.length === state.cache.tokens && (!positions || positions.every((p, i) => p === i));
  await store.put(id, state.cache, { ...options, attachment, ...(contiguous ? { tokens: state.tokens } : {}) });
  return { tokens: state.cache.tokens };
}

export interface RestoreOptions {
  /**
   * Restore sessions saved before sessions carried a model fingerprint (attachment version 1)
   * without checking which model computed them. Default false: such sessions are refused.
   */
  allowUnfingerprinted?: boolean;
}

/**
 * Loads session `id` from the store into `sequence` (replacing its contents). Returns the tier
 * it came from and its token ids, or undefined when the store does not have it. The sequence's
 * context must use the same KV cache types and attention settings (flash attention on or off)
 * as the one the session was saved from.
 *
 * @throws KvtcError E_PROFILE_MISMATCH when the session was computed by another model than the
 *   sequence's (checked before the sequence is touched), E_LAYOUT when llama.cpp refuses it.
 */
export async function restoreSequence(
  store: KvStore,
  id: string,
  sequence: LlamaContextSequence,
  options: RestoreOptions = {},
): Promise<{ tier: Tier; tokens: Int32Array } | undefined> {
  const entry = await store.getEntry(id);
  if (!entry) return undefined;
  const extras = decodeExtras(entry.attachment);
  if (extras.model === undefined) {
    if (!options.allowUnfingerprinted) {
      throw new KvtcError('E_PROFILE_MISMATCH', `session ${id} carries no model fingerprint (saved by an older adapter); pass allowUnfingerprinted to restore it unchecked`);
    }
  } else {
    const model = await fingerprintOf(sequence.model);
    if (model !== extras.model) {
      throw new KvtcError('E_PROFILE_MISMATCH', `session ${id} was computed by model ${extras.model}, the sequence runs model ${model}`);
    }
  }
  await writeSequenceStateTo(sequence, stateFor(entry.cache, extras));
  return { tier: entry.tier, tokens: extras.tokens };
}

/**
 * Starts `sequence` from the longest stored prefix of `tokens` — e.g. a system prompt shared with
 * earlier conversations — so only the rest needs evaluating. Looks in every session of the
 * namespace that was saved with saveSequence (`store.getPrefix`), checks that the session was
 * computed by the sequence's model, and loads the matched prefix into the sequence (replacing its
 * contents). Returns how many tokens it restored (evaluate `tokens.slice(restored)` next), the
 * tier and the session it came from; undefined when no session holds a prefix of at least one
 * chunk (`chunkTokens` of the store).
 *
 * @throws KvtcError E_PROFILE_MISMATCH when the session holding the prefix was computed by
 *   another model (checked before the sequence is touched).
 */
export async function restorePrefix(
  store: KvStore,
  tokens: ArrayLike<number>,
  sequence: LlamaContextSequence,
  options: { namespace?: string } = {},
): Promise<{ restored: number; tier: Tier; from: string } | undefined> {
  const entry = await store.getPrefix(tokens, options.namespace !== undefined ? { namespace: options.namespace } : {});
  if (!entry) return undefined;
  const extras = decodeExtras(entry.attachment);
  const model = await fingerprintOf(sequence.model);
  if (extras.model !== model) {
    throw new KvtcError('E_PROFILE_MISMATCH', `the session holding this prefix (${entry.from}) was computed by model ${extras.model ?? '(unknown)'}, the sequence runs model ${model}`);
  }
  const n = entry.cache.tokens;
  await writeSequenceStateTo(sequence, stateFor(entry.cache, { ...extras, tokens: extras.tokens.slice(0, n) }));
  return { restored: n, tier: entry.tier, from: entry.from! };
}
