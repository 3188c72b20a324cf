/**
 * Per-id ordering: the operations on one session id run one after another, in call order, on
 * that id's lane; different ids proceed in parallel. Concurrent gets of one id share one restore
 * (single flight) — unless a write to the id was called in between, which starts a new version.
 */
export class Lanes {
  readonly #tails = new Map<string, Promise<unknown>>();
  readonly #versions = new Map<string, number>();
  readonly #shared = new Map<string, { version: number; promise: Promise<unknown>; callers: number }>();

  /** Runs fn after every earlier operation on the same id (whether they succeeded or not). */
  run<T>(id: string, fn: () => Promise<T>): Promise<T> {
    const prev = this.#tails.get(id) ?? Promise.resolve();
    const result = prev.then(fn, fn);
    const tail = result.then(
      () => undefined,
      () => undefined,
    );
    this.#tails.set(id, tail);
    void tail.then(() => {
      if (this.#tails.get(id) === tail) {
        this.#tails.delete(id);
        // Nothing queued and no read in flight for the id: its version need not be remembered.
        this.#versions.delete(id);
      }
    });
    return result;
  }

  /** A write to `id` is coming: reads in flight return the old version and are not shared with later ones. */
  bump(id: string): void {
    this.#versions.set(id, (this.#versions.get(id) ?? 0) + 1);
  }

  /**
   * Runs `fn` on the id's lane, or joins a read of the same version already in flight.
   * `joined` says which (a joined caller must not take a result the first caller owns);
   * `callers()` is how many callers share the read — final once it has settled (no caller can
   * join a settled read), so the first caller may take the result as it is only when it is 1:
   * otherwise the joined callers would be copying what it may already be writing.
   */
  shared<T>(id: string, fn: () => Promise<T>): { promise: Promise<T>; joined: boolean; callers: () => number } {
    const version = this.#versions.get(id) ?? 0;
    const inflight = this.#shared.get(id);
    if (inflight !== undefined && inflight.version === version) {
      inflight.callers++;
      return { promise: inflight.promise as Promise<T>, joined: true, callers: () => inflight.callers };
    }
    const promise = this.run(id, fn);
    const rec = { version, promise, callers: 1 };
    this.#shared.set(id, rec);
    const clear = () => {
      if (this.#shared.get(id) === rec) this.#shared.delete(id);
    };
    promise.then(clear, clear);
    return { promise, joined: false, callers: () => rec.callers };
  }

  /** Promises of every lane still running (for drains). */
  pending(): Promise<unknown>[] {
    return [...this.#tails.values()];
  }
}
