/**
 * Ids in least-recently-used order by a timestamp (ties in order of arrival), with O(1) placement
 * when timestamps come in time order and O(log n) otherwise — never a sort of every id. Ids placed
 * in time order are appended to a Map, whose iteration order is then the LRU order; an id placed
 * with an older timestamp than the newest (a record spilled with its old lastAccess, a clock
 * that went back, a record written by another process) goes to a min-heap instead. The least
 * recent id is the older of the Map's first and the heap's top. Heap entries are never updated
 * in place: a placed-again or deleted id leaves a stale entry, recognised and dropped when it
 * surfaces, and the heap is rebuilt when stale entries outnumber live ones.
 */
export class LruOrder {
  /** In time order: id -> [timestamp, arrival]. */
  readonly #inOrder = new Map<string, [number, number]>();
  #newest = -Infinity;
  /** Placed out of time order: id -> [timestamp, arrival], and the heap of those entries. */
  readonly #late = new Map<string, [number, number]>();
  #heapAt: number[] = [];
  #heapSeq: number[] = [];
  #heapId: string[] = [];
  #seq = 0;

  get size(): number {
    return this.#inOrder.size + this.#late.size;
  }

  /** Places `id` at `at` (a move when it was placed before). */
  place(id: string, at: number): void {
    this.delete(id);
    const seq = this.#seq++;
    if (at >= this.#newest) {
      this.#inOrder.set(id, [at, seq]);
      this.#newest = at;
      return;
    }
    this.#late.set(id, [at, seq]);
    this.#push(at, seq, id);
  }

  delete(id: string): void {
    if (this.#inOrder.delete(id)) return;
    if (this.#late.delete(id) && this.#heapAt.length > 2 * this.#late.size + 1024) this.#rebuildHeap();
  }

  /** The least recent id that `accept` takes, or undefined. O(log n) plus the ids refused. */
  first(accept: (id: string) => boolean): string | undefined {
    const refused: [number, number, string][] = [];
    const iter = this.#inOrder.entries();
    let next = iter.next();
    try {
      for (;;) {
        this.#dropStale();
        const fromMap = next.done ? undefined : next.value;
        const hasHeap = this.#heapAt.length > 0;
        if (!fromMap && !hasHeap) return undefined;
        const heapFirst = hasHeap && (!fromMap || this.#before(this.#heapAt[0]!, this.#heapSeq[0]!, fromMap[1][0], fromMap[1][1]));
        if (heapFirst) {
          const e: [number, number, string] = [this.#heapAt[0]!, this.#heapSeq[0]!, this.#heapId[0]!];
          if (accept(e[2])) return e[2];
          this.#pop();
          refused.push(e);
        } else {
          if (accept(fromMap![0])) return fromMap![0];
          next = iter.next();
        }
      }
    } finally {
      for (const [at, seq, id] of refused) this.#push(at, seq, id);
    }
  }

  /** Every id, least recent first (O(n log n); for listings, not per operation). */
  ids(): string[] {
    const late = [...this.#late].sort((a, b) => (this.#before(a[1][0], a[1][1], b[1][0], b[1][1]) ? -1 : 1));
    const out: string[] = [];
    let j = 0;
    for (const [id, [at, seq]] of this.#inOrder) {
      while (j < late.length && this.#before(late[j]![1][0], late[j]![1][1], at, seq)) out.push(late[j++]![0]);
      out.push(id);
    }
    while (j < late.length) out.push(late[j++]![0]);
    return out;
  }

  #before(at: number, seq: number, at2: number, seq2: number): boolean {
    return at < at2 || (at === at2 && seq < seq2);
  }

  /** Drops heap tops that are not the current placement of their id. */
  #dropStale(): void {
    while (this.#heapAt.length > 0) {
      const cur = this.#late.get(this.#heapId[0]!);
      if (cur && cur[1] === this.#heapSeq[0]) return;
      this.#pop();
    }
  }

  #rebuildHeap(): void {
    this.#heapAt = [];
    this.#heapSeq = [];
    this.#heapId = [];
    for (const [id, [at, seq]] of this.#late) this.#push(at, seq, id);
  }

  #push(at: number, seq: number, id: string): void {
    this.#heapAt.push(at);
    this.#heapSeq.push(seq);
    this.#heapId.push(id);
    let i = this.#heapAt.length - 1;
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (!this.#before(this.#heapAt[i]!, this.#heapSeq[i]!, this.#heapAt[p]!, this.#heapSeq[p]!)) return;
      this.#swap(i, p);
      i = p;
    }
  }

  #pop(): void {
    const at = this.#heapAt.pop()!;
    const seq = this.#heapSeq.pop()!;
    const id = this.#heapId.pop()!;
    const n = this.#heapAt.length;
    if (n === 0) return;
    this.#heapAt[0] = at;
    this.#heapSeq[0] = seq;
    this.#heapId[0] = id;
    for (let i = 0; ; ) {
      const l = 2 * i + 1;
      const r = l + 1;
      let m = i;
      if (l < n && this.#before(this.#heapAt[l]!, this.#heapSeq[l]!, this.#heapAt[m]!, this.#heapSeq[m]!)) m = l;
      if (r < n && this.#before(this.#heapAt[r]!, this.#heapSeq[r]!, this.#heapAt[m]!, this.#heapSeq[m]!)) m = r;
      if (m === i) return;
      this.#swap(i, m);
      i = m;
    }
  }

  #swap(i: number, j: number): void {
    [this.#heapAt[i], this.#heapAt[j]] = [this.#heapAt[j]!, this.#heapAt[i]!];
    [this.#heapSeq[i], this.#heapSeq[j]] = [this.#heapSeq[j]!, this.#heapSeq[i]!];
    [this.#heapId[i], this.#heapId[j]] = [this.#heapId[j]!, this.#heapId[i]!];
  }
}
