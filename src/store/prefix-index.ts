/**
 * Which stored sessions begin with a given token sequence. A session put with token ids is
 * indexed by a hash chain over its chunks of `chunkTokens` tokens: the key of chunk i covers the
 * namespace, the profile fingerprint and every (token id, position) pair up to the end of chunk
 * i, so equal keys mean equal prefixes (vLLM's block hashes, LMCache's chunk keys). A lookup walks
 * the chain of the query as far as the index knows it, then extends the match token by token
 * against the candidate sessions' own ids.
 *
 * The namespace is a salt in every key: sessions of one namespace never match a query of another
 * (sharing a prefix across tenants would be a timing side channel).
 */
import { createHash } from 'node:crypto';

/** What the index needs of a session. */
export interface IndexedSession {
  id: string;
  namespace: string;
  tokenIds: Int32Array;
  /** Absolute positions of the tokens (undefined: 0..n-1). */
  positions?: Int32Array | undefined;
}

export interface PrefixMatch {
  id: string;
  /** Tokens of the query the session holds as its own first tokens. */
  tokens: number;
}

/** The chain keys of the full chunks of a token sequence (positions 0..n-1 unless given). */
export function chainKeys(seed: string, namespace: string, tokenIds: Int32Array, chunkTokens: number, positions?: Int32Array): string[] {
  const keys: string[] = [];
  let prev = createHash('sha256').update(`kvtc-prefix-v1\0${seed}\0${namespace}`).digest();
  const pairs = new Int32Array(2 * chunkTokens);
  for (let c = 0; (c + 1) * chunkTokens <= tokenIds.length; c++) {
    for (let i = 0; i < chunkTokens; i++) {
      const t = c * chunkTokens + i;
      pairs[2 * i] = tokenIds[t]!;
      pairs[2 * i + 1] = positions ? positions[t]! : t;
    }
    prev = createHash('sha256').update(prev).update(new Uint8Array(pairs.buffer)).digest();
    keys.push(prev.subarray(0, 16).toString('hex'));
  }
  return keys;
}

const NONE: ReadonlySet<string> = new Set();

export class PrefixIndex {
  readonly #byKey = new Map<string, Set<string>>();
  readonly #sessions = new Map<string, { session: IndexedSession; keys: string[] }>();

  /**
   * @param seed binds keys to one profile (its fingerprint): another model's caches never match
   * @param chunkTokens chunk length of the hash chain
   */
  constructor(readonly seed: string, readonly chunkTokens: number) {}

  get size(): number {
    return this.#sessions.size;
  }

  /** Indexes (or re-indexes) a session. */
  add(s: IndexedSession): void {
    this.remove(s.id);
    const keys = chainKeys(this.seed, s.namespace, s.tokenIds, this.chunkTokens, s.positions);
    this.#sessions.set(s.id, { session: s, keys });
    for (const k of keys) {
      let ids = this.#byKey.get(k);
      if (!ids) this.#byKey.set(k, (ids = new Set()));
      ids.add(s.id);
    }
  }

  remove(id: string): void {
    const e = this.#sessions.get(id);
    if (!e) return;
    this.#sessions.delete(id);
    for (const k of e.keys) {
      const ids = this.#byKey.get(k);
      ids?.delete(id);
      if (ids?.size === 0) this.#byKey.delete(k);
    }
  }

  /** The chain keys of a session's full chunks as indexed (undefined: not indexed). */
  keysOf(id: string): readonly string[] | undefined {
    return this.#sessions.get(id)?.keys;
  }

  /** Sessions whose chain holds `key`: each begins with that chunk's prefix. */
  sessionsWith(key: string): ReadonlySet<string> {
    return this.#byKey.get(key) ?? NONE;
  }

  /**
   * Sessions holding the longest prefix of `tokenIds` (positions 0..n-1) within `namespace`,
   * best first; `usable(id)` filters out sessions that can no longer be restored. Matches shorter
   * than one chunk are not found (the chain starts at the first full chunk).
   */
  longest(namespace: string, tokenIds: Int32Array, usable: (id: string) => boolean): PrefixMatch[] {
    const keys = chainKeys(this.seed, namespace, tokenIds, this.chunkTokens);
    let candidates: Set<string> | undefined;
    let chunks = 0;
    for (const k of keys) {
      const ids = this.#byKey.get(k);
      if (!ids || ![...ids].some(usable)) break;
      candidates = ids;
      chunks++;
    }
    if (!candidates) return [];
    const out: PrefixMatch[] = [];
    for (const id of candidates) {
      if (!usable(id)) continue;
      const s = this.#sessions.get(id)!.session;
      // Extend past the matched chunks token by token (positions must be 0..n-1 there too).
      let m = chunks * this.chunkTokens;
      const limit = Math.min(s.tokenIds.length, tokenIds.length);
      while (m < limit && s.tokenIds[m] === tokenIds[m] && (s.positions ? s.positions[m] === m : true)) m++;
      out.push({ id, tokens: m });
    }
    return out.sort((a, b) => b.tokens - a.tokens);
  }
}
