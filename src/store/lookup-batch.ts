/**
 * Lookups made in one stretch of the event loop, answered by one store round trip. The XMPP
 * transport parses a whole socket read synchronously and every publish looks its node up before its
 * first await, so the lookups of one read arrive together: instead of one WAL read transaction
 * (SQLite) or one query and network round trip (PostgreSQL) each, the store answers them with one.
 *
 * The batch runs as a microtask (queueMicrotask): once the synchronous stretch that made the
 * first lookup has ended, so after the parse of a whole chunk, and before any I/O, timer or
 * immediate. Lookups reached after the same number of awaits (publishes of one chunk going through
 * the same resolvers) still share it, since their continuations were queued before it. A
 * process.nextTick batch would also take lookups one await deeper (it runs once the microtask queue
 * is empty), but measured about 0.3 µs more per batch, which a lone lookup would pay in full.
 */

/**
 * Answers a batch: one value per key, in the keys' order (a key asked twice is in `keys` twice and
 * gets two values, so callers never share a mutable object). Synchronous or not; a throw or a
 * rejection fails every lookup of the batch with that error.
 */
export type LookupMany<Key, Value> = (keys: Key[]) => Value[] | Promise<Value[]>;
/** Answers a batch of one key. */
export type LookupOne<Key, Value> = (key: Key) => Value | Promise<Value>;

export interface LookupBatcherOptions<Key, Value> {
  /** Keys per call of `lookupMany`; a larger batch is split into several calls (e.g. a bound on query parameters). */
  maxBatch?: number;
  /** For a lone lookup, when it has a cheaper way than `lookupMany` (its own statement). */
  lookupOne?: LookupOne<Key, Value>;
}

type Waiter<Value> = PromiseWithResolvers<Value>;

/** One per store and kind of lookup: `lookup()` instead of a query of one's own. */
export class LookupBatcher<Key, Value> {
  private readonly lookupMany: LookupMany<Key, Value>;
  private readonly maxBatch: number;
  private readonly lookupOne: LookupOne<Key, Value> | undefined;
  private keys: Key[] = [];
  private waiters: Array<Waiter<Value>> = [];

  constructor(lookupMany: LookupMany<Key, Value>, options: LookupBatcherOptions<Key, Value> = {}) {
    this.lookupMany = lookupMany;
    this.maxBatch = Math.max(1, options.maxBatch ?? Number.POSITIVE_INFINITY);
    this.lookupOne = options.lookupOne;
  }

  lookup(key: Key): Promise<Value> {
    const waiter = Promise.withResolvers<Value>();
    if (this.keys.length === 0) queueMicrotask(this.runBatch);
    this.keys.push(key);
    this.waiters.push(waiter);
    return waiter.promise;
  }

  /**
   * Answers the lookups waiting now instead of in their microtask: for a store about to close, which
   * must not fail lookups that were made while it was open.
   */
  flush(): void {
    this.runBatch();
  }

  /** A bound field, so scheduling allocates no closure per batch. */
  private readonly runBatch = (): void => {
    if (this.keys.length === 0) return;
    if (this.keys.length === 1 && this.lookupOne) {
      // The arrays stay for the next batch: at a low rate every batch is a lone lookup, and it
      // should cost no more than the lookup did before there were batches.
      this.answerOne(this.lookupOne, this.keys.pop()!, this.waiters.pop()!);
      return;
    }
    const { keys, waiters } = this;
    // Lookups made while this batch is answered (an async one in flight) start the next batch.
    this.keys = [];
    this.waiters = [];
    if (keys.length <= this.maxBatch) {
      this.answer(keys, waiters);
      return;
    }
    for (let start = 0; start < keys.length; start += this.maxBatch) {
      this.answer(keys.slice(start, start + this.maxBatch), waiters.slice(start, start + this.maxBatch));
    }
  };

  private answerOne(lookupOne: LookupOne<Key, Value>, key: Key, waiter: Waiter<Value>): void {
    try {
      // A promise is adopted: its rejection rejects the lookup.
      waiter.resolve(lookupOne(key));
    } catch (error) {
      waiter.reject(error);
    }
  }

  private answer(keys: Key[], waiters: Array<Waiter<Value>>): void {
    let values: Value[] | Promise<Value[]>;
    try {
      values = this.lookupMany(keys);
    } catch (error) {
      for (const waiter of waiters) waiter.reject(error);
      return;
    }
    if (Array.isArray(values)) {
      settle(values, waiters);
      return;
    }
    values.then((answered) => settle(answered, waiters), (error: unknown) => {
      for (const waiter of waiters) waiter.reject(error);
    });
  }
}

function settle<Value>(values: Value[], waiters: Array<Waiter<Value>>): void {
  if (values.length !== waiters.length) {
    // A bug in lookupMany: better every caller told than some silently handed another key's answer.
    const error = new Error(`a lookup batch of ${waiters.length} keys was answered with ${values.length} values`);
    for (const waiter of waiters) waiter.reject(error);
    return;
  }
  for (let index = 0; index < waiters.length; index++) waiters[index].resolve(values[index]);
}
