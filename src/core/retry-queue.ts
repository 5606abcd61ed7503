/**
 * The retry queue over the store, with a memory fallback: a retry the store refuses to save (disk
 * full, locked) is kept in memory, written when the store accepts writes again, and sent when due
 * either way, so a store error never loses an accepted push while the process lives.
 */
import type { Logger } from '../log.ts';
import type { NewRetry, Store, StoredRetry } from '../store/types.ts';

const MEMORY_LIMIT = 100_000;

/**
 * A retry that lives only in memory has a negative revision, a new one at every save (merge), so it
 * follows the store's rule: a finish or reschedule acts only on the entry its lease took (same
 * revision, dueAt still that lease's end), never on a newer push merged into it meanwhile.
 */
function inMemory(retry: StoredRetry): boolean {
  return retry.revision < 0;
}

export class RetryQueue {
  private readonly store: Store;
  private readonly logger: Logger;
  private readonly unsaved = new Map<string, StoredRetry>();
  private lastMemoryRevision = 0;
  private warnedAt = 0;
  private goneHoldersReleased = false;

  constructor(store: Store, logger: Logger) {
    this.store = store;
    this.logger = logger;
  }

  private warn(message: string, error: unknown): void {
    const now = Date.now();
    if (now - this.warnedAt < 60_000) return;
    this.warnedAt = now;
    this.logger.warn(message, { error: (error as Error).message, in_memory: this.unsaved.size });
  }

  /** Saves (or merges into the key's pending retry); false: kept in memory only. */
  async save(retry: NewRetry): Promise<boolean> {
    try {
      await this.store.saveRetry(retry);
      this.unsaved.delete(retry.key);
      return true;
    } catch (error) {
      this.warn('cannot save a retry in the store; kept in memory', error);
      const older = this.unsaved.get(retry.key);
      if (!older && this.unsaved.size >= MEMORY_LIMIT) this.unsaved.delete(this.unsaved.keys().next().value as string);
      this.unsaved.set(retry.key, {
        ...retry,
        dueAt: older ? Math.min(older.dueAt, retry.dueAt) : retry.dueAt,
        attempt: older ? Math.max(older.attempt, retry.attempt) : retry.attempt,
        revision: --this.lastMemoryRevision,
        leasedUntil: 0,
      });
      return false;
    }
  }

  async lease(now: number, limit: number, leaseUntil: number): Promise<StoredRetry[]> {
    if (!this.goneHoldersReleased) await this.releaseLeasesOfGoneHolders(now);
    for (const retry of [...this.unsaved.values()]) {
      try {
        await this.store.saveRetry(retry);
        this.unsaved.delete(retry.key);
      } catch {
        break;
      }
    }
    let leased: StoredRetry[] = [];
    try {
      leased = await this.store.leaseDueRetries(now, limit, leaseUntil);
    } catch (error) {
      this.warn('cannot read due retries from the store; retrying', error);
    }
    for (const retry of this.unsaved.values()) {
      if (leased.length >= limit) break;
      if (retry.dueAt > now) continue;
      leased.push({ ...retry, leasedUntil: leaseUntil });
      retry.dueAt = leaseUntil;
    }
    return leased;
  }

  /**
   * Once, before the first lease: what a process that is gone (this server before a kill -9) had
   * leased is due now, rather than when its lease ends. Tried again at the next lease if the store fails.
   */
  private async releaseLeasesOfGoneHolders(now: number): Promise<void> {
    try {
      const released = await this.store.releaseLeasesOfGoneHolders(now);
      this.goneHoldersReleased = true;
      if (released > 0) this.logger.info('retries leased by a process that is gone are due again', { retries: released });
    } catch (error) {
      this.warn('cannot take back the retries of a process that is gone; retrying', error);
    }
  }

  /** The entry this lease took, when it is still in memory as leased. */
  private leasedInMemory(retry: StoredRetry): StoredRetry | undefined {
    const entry = this.unsaved.get(retry.key);
    return entry && entry.revision === retry.revision && entry.dueAt === retry.leasedUntil ? entry : undefined;
  }

  /** The outcome is known: the retry leaves the queue (unless a newer push merged into it, or it was leased again). */
  async finish(retry: StoredRetry): Promise<void> {
    if (inMemory(retry)) {
      if (this.leasedInMemory(retry)) this.unsaved.delete(retry.key);
      return;
    }
    try {
      await this.store.finishRetry(retry.key, retry.revision, retry.leasedUntil);
    } catch (error) {
      // The row comes back when its lease ends: sent twice at worst, never lost.
      this.warn('cannot remove a finished retry from the store', error);
    }
  }

  async reschedule(retry: StoredRetry, dueAt: number, attempt: number, reason: string): Promise<void> {
    if (inMemory(retry)) {
      // Gone from memory (written to the store since, where its row is due at this lease's end) or
      // merged into: what is there comes back on its own.
      const entry = this.leasedInMemory(retry);
      if (entry) Object.assign(entry, { dueAt, attempt, reason });
      return;
    }
    try {
      await this.store.rescheduleRetry(retry.key, retry.revision, retry.leasedUntil, dueAt, attempt, reason);
    } catch (error) {
      this.warn('cannot reschedule a retry in the store; it comes back when its lease ends', error);
    }
  }

  async count(): Promise<number> {
    try {
      return (await this.store.countRetries()) + this.unsaved.size;
    } catch {
      return this.unsaved.size;
    }
  }
}
