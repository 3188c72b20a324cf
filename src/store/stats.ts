/**
 * Counters and latency samples behind KvStore.stats(). Latencies are kept in a bounded ring per
 * tier (the most recent samples), so percentiles reflect current behaviour at O(1) memory.
 */
import type { Tier } from './session.js';

const RING = 2048;

class Ring {
  readonly #v = new Float64Array(RING);
  #n = 0;
  add(x: number): void {
    this.#v[this.#n % RING] = x;
    this.#n++;
  }
  percentile(p: number): number | undefined {
    const n = Math.min(this.#n, RING);
    if (n === 0) return undefined;
    const s = this.#v.slice(0, n).sort();
    return s[Math.min(n - 1, Math.floor((p / 100) * n))]!;
  }
}

export interface TierStats {
  entries: number;
  /** Bytes of the sessions' raw caches. */
  rawBytes: number;
  /**
   * Every byte the tier holds for its sessions (what its capacity limits): the raw cache in the
   * device tier, the encoded blob below, plus each session's overhead.
   */
  storedBytes: number;
  /** The part of storedBytes that is not cache data: attachments, positions, metadata. */
  overheadBytes: number;
  hits: number;
  /** get() latency in ms as the caller saw it (queue wait and copy included), over the most recent hits of this tier. */
  getP50Ms: number | undefined;
  getP99Ms: number | undefined;
}

export interface StoreStats {
  device: TierStats;
  host: TierStats;
  disk: TierStats & {
    /** Records that failed a check, kept for inspection (bounded by tiers.disk.quarantineBytes). */
    quarantine: { entries: number; bytes: number };
  };
  /**
   * The shared remote tier (`remote` option): hits and get latency (as the caller sees them),
   * sessions and bytes sent and received, faults and misses by reason. Absent without one.
   */
  remote?: Pick<TierStats, 'hits' | 'getP50Ms' | 'getP99Ms'> & import('./remote-tier.js').RemoteStats & { pendingWrites: number };
  misses: number;
  /**
   * Tokens encoded and decoded by the store's codec calls, cumulative; and tokens of restored
   * chunks copied from a hot session that holds the same prefix (put with the same token ids in
   * the same namespace), which were not decoded.
   */
  codec: { encodedTokens: number; decodedTokens: number; copiedTokens: number };
  /**
   * Encoded chunks below the hot tier, counted per tier that stores them (a chunk in the host
   * tier and on disk counts twice): `count` chunks held, `refs` references sessions hold to them,
   * `bytesSaved` the bytes the references beyond the first would have taken stored apart.
   */
  chunks: { count: number; refs: number; bytesSaved: number };
  /** Raw bytes / encoded blob bytes over every encoded session (host and disk tiers). */
  meanRatio: number | undefined;
  /** Bytes of native host-arena memory in use, and whether it is page-locked. */
  arena: { bytes: number; blocks: number; pinned: boolean };
  workers: number;
  /** Where the hot tier and the codec run. */
  backend: 'cuda' | 'cpu';
}

export class StoreCounters {
  readonly hits: Record<Tier, number> = { device: 0, host: 0, disk: 0, remote: 0 };
  misses = 0;
  readonly #lat: Record<Tier, Ring> = { device: new Ring(), host: new Ring(), disk: new Ring(), remote: new Ring() };

  hit(tier: Tier, ms: number): void {
    this.hits[tier]++;
    this.#lat[tier].add(ms);
  }

  latency(tier: Tier): { getP50Ms: number | undefined; getP99Ms: number | undefined } {
    return { getP50Ms: this.#lat[tier].percentile(50), getP99Ms: this.#lat[tier].percentile(99) };
  }
}
