/**
 * Deadlines of records with a TTL, earliest first (a binary min-heap), so finding what expired
 * costs O(k log n) for k expired records instead of a pass over every record on each sweep.
 * Entries are never updated in place: a touched or replaced record gets a new entry, and stale
 * ones are recognised when they surface (the owner says which deadline is current).
 */
export class DeadlineHeap {
  #at: number[] = [];
  #id: string[] = [];

  get size(): number {
    return this.#at.length;
  }

  push(deadline: number, id: string): void {
    this.#at.push(deadline);
    this.#id.push(id);
    this.#up(this.#at.length - 1);
  }

  /**
   * Ids whose current deadline (`current(id)`, undefined when the id has none any more) has
   * passed at `now`. Stale entries met on the way are dropped; the returned ids stay in the heap
   * (an expired record that is not removed is reported again next time).
   */
  due(now: number, current: (id: string) => number | undefined): string[] {
    const out: string[] = [];
    const seen = new Set<string>();
    const keep: [number, string][] = [];
    while (this.#at.length > 0 && this.#at[0]! <= now) {
      const at = this.#at[0]!;
      const id = this.#id[0]!;
      this.#pop();
      if (current(id) !== at || seen.has(id)) continue; // stale (touched, replaced or removed since), or a twin
      seen.add(id);
      out.push(id);
      keep.push([at, id]);
    }
    for (const [at, id] of keep) this.push(at, id);
    return out;
  }

  /** Rebuilds from the live deadlines when stale entries outnumber them (bounded memory). */
  compact(live: Iterable<[string, number]>, liveCount: number): void {
    if (this.#at.length <= 2 * liveCount + 1024) return;
    this.#at = [];
    this.#id = [];
    for (const [id, at] of live) this.push(at, id);
  }

  #pop(): void {
    const lastAt = this.#at.pop()!;
    const lastId = this.#id.pop()!;
    if (this.#at.length === 0) return;
    this.#at[0] = lastAt;
    this.#id[0] = lastId;
    this.#down(0);
  }

  #up(i: number): void {
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (this.#at[p]! <= this.#at[i]!) return;
      this.#swap(i, p);
      i = p;
    }
  }

  #down(i: number): void {
    const n = this.#at.length;
    for (;;) {
      const l = 2 * i + 1;
      const r = l + 1;
      let m = i;
      if (l < n && this.#at[l]! < this.#at[m]!) m = l;
      if (r < n && this.#at[r]! < this.#at[m]!) m = r;
      if (m === i) return;
      this.#swap(i, m);
      i = m;
    }
  }

  #swap(a: number, b: number): void {
    [this.#at[a], this.#at[b]] = [this.#at[b]!, this.#at[a]!];
    [this.#id[a], this.#id[b]] = [this.#id[b]!, this.#id[a]!];
  }
}
