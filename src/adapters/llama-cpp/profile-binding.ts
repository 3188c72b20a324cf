/**
 * Which model a codec profile was calibrated on. A profile's basis is learned from one model's
 * caches and codes another model's poorly, and CodecProfile has no free-form field to record
 * the model in, so the binding lives beside it: calibrateFromModel binds the profiles it makes,
 * and an application that saves a profile keeps the fingerprint with it and binds it again
 * after loading (bindProfileToModel). saveSequence refuses a sequence of another model.
 */
import type { CodecProfile } from '../../codec/profile.js';
import { KvtcError } from '../../errors.js';

const bindings = new WeakMap<CodecProfile, string>();

/** Binds `profile` to the model with this fingerprint (32 hex digits, see modelFingerprint). */
export function bindProfileToModel(profile: CodecProfile, fingerprint: string): void {
  if (typeof fingerprint !== 'string' || !/^[0-9a-f]{32}$/.test(fingerprint)) {
    throw new KvtcError('E_OPTIONS', `a model fingerprint is 32 lowercase hex digits, got ${String(fingerprint)}`);
  }
  const had = bindings.get(profile);
  if (had !== undefined && had !== fingerprint) {
    throw new KvtcError('E_PROFILE_MISMATCH', `profile ${profile.fingerprint} is already bound to model ${had}`);
  }
  bindings.set(profile, fingerprint);
}

/** The fingerprint of the model `profile` is bound to, if any. */
export function profileModel(profile: CodecProfile): string | undefined {
  return bindings.get(profile);
}
