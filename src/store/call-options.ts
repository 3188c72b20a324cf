/**
 * The options and results of the store's calls (put, get, getEntry, getInto, the prefix lookups)
 * and their validation: one place that names each field in its error and gives its default.
 */
import { checkInto } from '../codec/codec.js';
import type { CodecProfile } from '../codec/profile.js';
import { checkKeys, invalidParameter } from '../errors.js';
import type { KvCache } from '../layout.js';
import type { QuarantinedRecord } from './disk-tier.js';
import type { MissReason } from './events.js';
import type { Tier } from './session.js';

export interface PutOptions {
  /** Never demoted by capacity or idleness while pinned. Default false. */
  pin?: boolean;
  /** Expire the session after this long without access. Default: tiers.disk.ttlMs. */
  ttlMs?: number;
  /** Higher priority sessions leave the hot tier last. Default 0. */
  priority?: number;
  /**
   * Opaque bytes kept with the session in every tier and returned by getEntry() — e.g. the token
   * ids an engine needs to resume (the llama.cpp adapter stores them here). At most 16 MiB.
   */
  attachment?: Uint8Array;
  /**
   * Token ids, one per cached position (Int32Array, Uint32Array or numbers): the session's
   * prefixes become findable by matchPrefix/getPrefix (they are kept, and persisted, with it).
   */
  tokens?: ArrayLike<number>;
  /** Prefix lookups share sessions within one namespace only (e.g. a tenant). Default ''. */
  namespace?: string;
}

/** Options of matchPrefix and getPrefix. */
export interface PrefixOptions {
  /** Only sessions put with this namespace are considered. Default ''. */
  namespace?: string;
  /** getPrefix: move the session the prefix is restored from into the hot tier. Default true. */
  promote?: boolean;
}

/** A restored session: its cache, its attachment and the tier it was found in. */
export interface SessionEntry {
  cache: KvCache;
  /** The session's attachment (getPrefix: that of the session the prefix was restored from). */
  attachment?: Uint8Array;
  tier: Tier;
  /** getPrefix: the id of the session the prefix was restored from. */
  from?: string;
}

export interface GetOptions {
  /** Move a session found in a lower tier to the device tier. Default true. */
  promote?: boolean;
  /**
   * An object the call fills in to explain its outcome (like lru-cache's status): `result`,
   * and the `tier` of a hit or the `reason` of a miss, and the call's `ms` (what stats() reports).
   */
  status?: GetStatus;
  /**
   * A cache to restore into instead of a new one (an engine's own KV buffers, reused): no
   * allocation, no first-touch page faults, no garbage per get. Its layout must be the
   * profile's (else E_PROFILE_MISMATCH, before any restore) with the session's dtype, and
   * `into.tokens`, its capacity, at least the session's (else E_LAYOUT once the session is found;
   * it stays stored as it was). The result's arrays are views of `into`'s first rows (and of
   * `into.positions` when it has one). Must not be read or written until the get settles.
   * Default: a new cache.
   */
  into?: KvCache;
}

/** What a get() did (GetOptions.status). */
export interface GetStatus {
  result?: 'hit' | 'miss';
  tier?: Tier;
  reason?: MissReason;
  ms?: number;
}

/** The store's quarantine: records that failed a check, kept apart for inspection (KvStore.quarantine). */
export interface StoreQuarantine {
  /** The quarantined records, oldest first is not guaranteed. */
  list(): QuarantinedRecord[];
  /** Deletes every quarantined record, freeing its disk space; resolves with how many there were. */
  clear(): Promise<number>;
}

/** What getInto() restored into the caller's device buffers. */
export interface DeviceSessionEntry {
  tokens: number;
  positions: Int32Array;
  attachment?: Uint8Array;
  tier: Tier;
}

function tokenIdsOf(v: unknown, field: string): Int32Array {
  if (!(v instanceof Int32Array || v instanceof Uint32Array || Array.isArray(v))) {
    throw invalidParameter(field, 'an Int32Array, a Uint32Array or an array of token ids', v);
  }
  const out = new Int32Array(v.length);
  for (let i = 0; i < v.length; i++) {
    const t = (v as ArrayLike<unknown>)[i];
    if (typeof t !== 'number' || !Number.isInteger(t) || t < 0 || t > 0x7fffffff) throw invalidParameter(`${field}[${i}]`, 'a token id (an integer in 0..2^31-1)', t);
    out[i] = t;
  }
  return out;
}

function namespaceOf(v: unknown): string {
  if (v === undefined) return '';
  if (typeof v !== 'string' || Buffer.byteLength(v, 'utf8') > 256) throw invalidParameter('options.namespace', 'a string of at most 256 UTF-8 bytes', v);
  return v;
}

/** Validates matchPrefix/getPrefix arguments. */
export function checkPrefixArgs(tokens: unknown, o: PrefixOptions): { ids: Int32Array; namespace: string } {
  if (typeof o !== 'object' || o === null) throw invalidParameter('prefix options', 'an object', o);
  checkKeys(o, ['namespace', 'promote'], 'prefix options');
  return { ids: tokenIdsOf(tokens, 'tokens'), namespace: namespaceOf(o.namespace) };
}

/** Validates put options; returns them with their defaults. */
export function resolvePutOptions(
  o: PutOptions,
  defaultTtl: number,
): { pin: boolean; ttlMs: number; priority: number; attachment: Uint8Array | undefined; tokens: Int32Array | undefined; namespace: string } {
  if (typeof o !== 'object' || o === null) throw invalidParameter('put options', 'an object', o);
  checkKeys(o, ['pin', 'ttlMs', 'priority', 'attachment', 'tokens', 'namespace'], 'put options');
  if (o.pin !== undefined && typeof o.pin !== 'boolean') throw invalidParameter('options.pin', 'a boolean', o.pin);
  if (o.ttlMs !== undefined && (typeof o.ttlMs !== 'number' || !Number.isSafeInteger(o.ttlMs) || o.ttlMs < 0)) {
    throw invalidParameter('options.ttlMs', 'a non-negative integer', o.ttlMs);
  }
  if (o.priority !== undefined && (typeof o.priority !== 'number' || !Number.isFinite(o.priority))) {
    throw invalidParameter('options.priority', 'a finite number', o.priority);
  }
  if (o.attachment !== undefined && (!(o.attachment instanceof Uint8Array) || o.attachment.byteLength > 16 << 20)) {
    throw invalidParameter('options.attachment', 'a Uint8Array of at most 16 MiB', o.attachment);
  }
  const tokens = o.tokens === undefined ? undefined : tokenIdsOf(o.tokens, 'options.tokens');
  return { pin: o.pin ?? false, ttlMs: o.ttlMs ?? defaultTtl, priority: o.priority ?? 0, attachment: o.attachment, tokens, namespace: namespaceOf(o.namespace) };
}

/** Validates get options against the store's profile, before anything is restored. */
export function checkGetOptions(o: GetOptions, profile: CodecProfile): { promote: boolean; status: GetStatus | undefined; into: KvCache | undefined } {
  if (typeof o !== 'object' || o === null) throw invalidParameter('get options', 'an object', o);
  checkKeys(o, ['promote', 'status', 'into'], 'get options');
  if (o.promote !== undefined && typeof o.promote !== 'boolean') throw invalidParameter('options.promote', 'a boolean', o.promote);
  if (o.status !== undefined && (typeof o.status !== 'object' || o.status === null)) throw invalidParameter('options.status', 'an object', o.status);
  const into = o.into === undefined ? undefined : checkInto(o.into, profile);
  return { promote: o.promote ?? true, status: o.status, into };
}
