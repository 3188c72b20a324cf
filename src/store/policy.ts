/**
 * Tier policies behind one interface: which session leaves a full tier, when an untouched session
 * is idle, and whether a new session may enter the hot tier. The store asks the policy and then
 * re-checks on the session's lane (a decision applies to the version it was made for), so a
 * policy is a pure function of what it is shown. Pass your own as `KvStore.open({ policy })`;
 * `LruPriorityPolicy` is the default.
 */
import type { SessionMeta } from './session.js';

/** What a policy sees of one session in a tier. */
export interface PolicyEntry {
  readonly id: string;
  /** Every byte the session holds in this tier. */
  readonly bytes: number;
  readonly tokens: number;
  readonly pinned: boolean;
  readonly priority: number;
  /** ms since the epoch. */
  readonly createdAt: number;
  readonly lastAccess: number;
}

/** A tier's state when the policy is asked to admit a session into it. */
export interface TierState {
  readonly capacityBytes: number;
  /** Bytes held now. */
  readonly bytes: number;
}

export interface Policy {
  /**
   * The hot session to demote next while the device tier is over capacity, from `candidates`
   * (least recently used first; pinned sessions are never offered). undefined: none may go.
   */
  deviceVictim(candidates: Iterable<PolicyEntry>): string | undefined;
  /** The warm session to spill to disk next while the host tier is over capacity (least recently used first). */
  hostVictim(candidates: Iterable<PolicyEntry>): string | undefined;
  /** Whether an untouched session has been idle long enough to leave its tier (`idleMs` from the options, > 0). */
  isIdle(tier: 'device' | 'host', entry: PolicyEntry, now: number, idleMs: number): boolean;
  /** Whether a new session of `entry.bytes` enters the hot tier (false: it is encoded into the host tier at once). */
  admit(entry: PolicyEntry, tier: TierState): boolean;
}

/**
 * The default: least recently used first, lower `priority` before higher (so a high-priority
 * session leaves the hot tier last), idle after `idleMs` without access, and every session that
 * fits the hot tier on its own admitted.
 */
export class LruPriorityPolicy implements Policy {
  deviceVictim(candidates: Iterable<PolicyEntry>): string | undefined {
    let best: string | undefined;
    let bestPriority = Infinity;
    for (const e of candidates) {
      if (e.priority < bestPriority) {
        best = e.id;
        bestPriority = e.priority;
      }
    }
    return best;
  }

  hostVictim(candidates: Iterable<PolicyEntry>): string | undefined {
    for (const e of candidates) return e.id;
    return undefined;
  }

  isIdle(_tier: 'device' | 'host', entry: PolicyEntry, now: number, idleMs: number): boolean {
    return now - entry.lastAccess >= idleMs;
  }

  admit(entry: PolicyEntry, tier: TierState): boolean {
    return entry.bytes <= tier.capacityBytes;
  }
}

/** The policy's view of a session: its metadata and the bytes it holds in the tier asked about. */
export function policyEntry(meta: SessionMeta, bytes: number): PolicyEntry {
  return {
    id: meta.id,
    bytes,
    tokens: meta.tokens,
    pinned: meta.pinned,
    priority: meta.priority,
    createdAt: meta.createdAt,
    lastAccess: meta.lastAccess,
  };
}

/** Checks that a value implements Policy (the four methods); returns it. */
export function isPolicy(v: unknown): v is Policy {
  if (typeof v !== 'object' || v === null) return false;
  const p = v as Record<string, unknown>;
  return ['deviceVictim', 'hostVictim', 'isIdle', 'admit'].every((m) => typeof p[m] === 'function');
}
