/**
 * The remote tier's key scheme. Every key is `kvtc:1:<namespace>:<fingerprint>:<kind>:<name>`:
 *
 * - the namespace (one per tenant) is escaped so that it can never contain `:` (it could then
 *   forge another namespace's keys) nor `{` / `}` (a Redis Cluster hash tag, which would pin every
 *   key of the namespace to one shard);
 * - the profile fingerprint keeps fleets running different codec profiles from overwriting each
 *   other's manifests under one namespace (values are checked against it as well);
 * - session ids are never put in a key as they are: a manifest key holds SHA-256 of the id (the
 *   manifest value names its id again, and a reader checks it, so even a collision reads as a miss);
 * - chunk keys are content-addressed hex strings, checked against a strict pattern.
 *
 * No key carries a hash tag: in cluster mode a session's chunks spread over every shard. The
 * consistency scheme (remote-tier.ts) needs no multi-key atomicity, so no tag is required anywhere.
 */
import { createHash } from 'node:crypto';
import { KvtcError, invalidParameter } from '../errors.js';

/** Version of the key scheme; part of every key so that a future scheme never reads these keys. */
const KEY_SCHEME = '1';

/** Longest namespace accepted, in characters before escaping. */
export const MAX_NAMESPACE_CHARS = 128;

/** Longest session id accepted, in UTF-8 bytes (it is framed with a 16-bit length). */
export const MAX_ID_BYTES = 65535;

/** A chunk key: lowercase hex, 32 to 64 digits (128- to 256-bit content or chain hashes). */
const CHUNK_KEY = /^[0-9a-f]{32,64}$/;

/** A profile fingerprint: 32 lowercase hex digits. */
const FINGERPRINT = /^[0-9a-f]{32}$/;

/** Characters a namespace keeps as they are; every other UTF-8 byte becomes `%XX`. */
const NAMESPACE_SAFE = /^[A-Za-z0-9._-]$/;

/** A lone UTF-16 surrogate: such a string has no UTF-8 form (it would be written as U+FFFD, colliding with others). */
const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;

function isWellFormed(s: string): boolean {
  return !LONE_SURROGATE.test(s);
}

/**
 * Escapes a namespace for use inside a key: ASCII letters, digits, `.`, `_`, `-` stay, every other
 * byte of its UTF-8 form becomes `%XX` (uppercase hex). Injective, so two namespaces never share keys.
 */
export function escapeNamespace(namespace: string): string {
  let out = '';
  for (const ch of namespace) {
    if (NAMESPACE_SAFE.test(ch)) {
      out += ch;
      continue;
    }
    for (const b of Buffer.from(ch, 'utf8')) out += `%${b.toString(16).toUpperCase().padStart(2, '0')}`;
  }
  return out;
}

/** Throws E_OPTIONS unless `ns` is a usable namespace (non-empty string, at most MAX_NAMESPACE_CHARS). */
export function checkNamespace(ns: unknown, field: string): string {
  if (typeof ns !== 'string' || ns.length === 0 || ns.length > MAX_NAMESPACE_CHARS || !isWellFormed(ns)) {
    throw invalidParameter(field, `a non-empty well-formed string of at most ${MAX_NAMESPACE_CHARS} characters`, ns);
  }
  return ns;
}

/** Throws E_OPTIONS unless `fp` is 32 lowercase hex digits. */
export function checkFingerprint(fp: unknown, field: string): string {
  if (typeof fp !== 'string' || !FINGERPRINT.test(fp)) throw invalidParameter(field, 'a fingerprint of 32 lowercase hex digits', fp);
  return fp;
}

/** Throws E_OPTIONS unless `key` is a chunk key (32 to 64 lowercase hex digits). */
export function checkChunkKey(key: unknown, field: string): string {
  if (typeof key !== 'string' || !CHUNK_KEY.test(key)) throw invalidParameter(field, 'a chunk key of 32 to 64 lowercase hex digits', key);
  return key;
}

/** Throws E_OPTIONS unless `id` is a non-empty well-formed string of at most MAX_ID_BYTES UTF-8 bytes. */
export function checkSessionId(id: unknown, field: string): string {
  if (typeof id !== 'string' || id.length === 0 || !isWellFormed(id)) {
    throw invalidParameter(field, 'a non-empty well-formed string', id);
  }
  if (Buffer.byteLength(id, 'utf8') > MAX_ID_BYTES) {
    throw new KvtcError('E_OPTIONS', `${field} must be at most ${MAX_ID_BYTES} UTF-8 bytes, got ${Buffer.byteLength(id, 'utf8')}`);
  }
  return id;
}

/** Builds the keys of one namespace and profile. */
export class RemoteKeys {
  readonly #prefix: string;

  /** `namespace` and `fingerprint` must have passed checkNamespace / checkFingerprint. */
  constructor(namespace: string, fingerprint: string) {
    this.#prefix = `kvtc:${KEY_SCHEME}:${escapeNamespace(namespace)}:${fingerprint}:`;
  }

  /** The prefix every key of this namespace and profile starts with (for tests and tooling: SCAN MATCH). */
  get prefix(): string {
    return this.#prefix;
  }

  /** The key of session `id`'s manifest: 128 bits of SHA-256 of its UTF-8 form, in hex. */
  manifest(id: string): string {
    return `${this.#prefix}m:${createHash('sha256').update(id, 'utf8').digest('hex').slice(0, 32)}`;
  }

  /** The key of chunk `key` (already checked by checkChunkKey). */
  chunk(key: string): string {
    return `${this.#prefix}c:${key}`;
  }
}
