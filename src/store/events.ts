/**
 * The store's typed events. A listener's failure never reaches a call: each listener runs
 * isolated (a throwing one neither rejects the operation that emitted the event nor keeps the
 * listeners after it from running), and its failure is reported once, as a process warning
 * (code KVTC_LISTENER) — not as another event, whose listener could throw in turn.
 */
import { EventEmitter } from 'eventemitter3';
import type { KvtcError } from '../errors.js';
import type { Tier } from './session.js';

/** Why a get() found nothing (the 'miss' event's and getEntry's `reason`). */
export type MissReason = 'absent' | 'expired' | 'evicted' | 'corrupt' | 'profile-mismatch';

/** Payload of every store event (fields that do not apply are absent). */
export interface StoreEvent {
  id: string;
  from?: Tier;
  /** Where the session went; absent when it left the store. */
  to?: Tier;
  /** Stored (encoded) bytes moved. */
  bytes?: number;
  /** Raw bytes of the session. */
  rawBytes?: number;
  /** Duration of the operation. */
  ms?: number;
  /** Why (corrupt records, errors, misses: a MissReason). */
  reason?: string;
  error?: KvtcError;
}

/** 'hit' ({ id, from: tier, ms }) and 'miss' ({ id, reason }) report every get(). */
export type StoreEventName = 'put' | 'demote' | 'spill' | 'promote' | 'evict' | 'delete' | 'expire' | 'corrupt' | 'error' | 'hit' | 'miss';

type Listener = (e: StoreEvent) => void;

export class StoreEvents {
  readonly #emitter = new EventEmitter();
  /** The isolating wrapper registered for each (event, listener), so off() finds it. */
  readonly #wrappers = new Map<StoreEventName, Map<Listener, Listener[]>>();

  on(event: StoreEventName, fn: Listener): void {
    this.#emitter.on(event, this.#wrap(event, fn, false));
  }

  once(event: StoreEventName, fn: Listener): void {
    this.#emitter.once(event, this.#wrap(event, fn, true));
  }

  off(event: StoreEventName, fn: Listener): void {
    const list = this.#wrappers.get(event)?.get(fn);
    const w = list?.shift();
    if (!w) return;
    if (list!.length === 0) this.#wrappers.get(event)!.delete(fn);
    this.#emitter.off(event, w);
  }

  /** Calls every listener of `event`; never throws. */
  emit(event: StoreEventName, e: StoreEvent): void {
    this.#emitter.emit(event, e);
  }

  listenerCount(event: StoreEventName): number {
    return this.#emitter.listenerCount(event);
  }

  #wrap(event: StoreEventName, fn: Listener, once: boolean): Listener {
    if (typeof fn !== 'function') throw new TypeError(`a listener of '${event}' must be a function`);
    const w: Listener = (e) => {
      if (once) this.#forget(event, fn, w);
      try {
        fn(e);
      } catch (err) {
        const message = err instanceof Error ? err.message : String(err);
        process.emitWarning(`a kvtc store listener of '${event}' threw (ignored): ${message}`, { code: 'KVTC_LISTENER' });
      }
    };
    let byFn = this.#wrappers.get(event);
    if (!byFn) this.#wrappers.set(event, (byFn = new Map()));
    const list = byFn.get(fn) ?? [];
    list.push(w);
    byFn.set(fn, list);
    return w;
  }

  #forget(event: StoreEventName, fn: Listener, w: Listener): void {
    const byFn = this.#wrappers.get(event);
    const list = byFn?.get(fn);
    if (!list) return;
    const i = list.indexOf(w);
    if (i >= 0) list.splice(i, 1);
    if (list.length === 0) byFn!.delete(fn);
  }
}
