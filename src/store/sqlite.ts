/**
 * The embedded store: one SQLite file through node:sqlite (no native module to compile), WAL mode.
 * Migrations are numbered and run at open (PRAGMA user_version). Push bookkeeping (counts, last
 * push) is batched and written every FLUSH_INTERVAL_MS in transactions of FLUSH_SLICE rows, so the
 * hot path does no write and no flush holds the event loop for long. WAL checkpoints run on a worker
 * thread (wal-checkpointer.ts), never in the middle of a commit on the serving thread.
 */
import { mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import { DatabaseSync, type StatementSync } from 'node:sqlite';
import type { NewRetry, Registration, RegistrationPage, RegistrationQuery, Store, StoreHealth, StoredRetry } from './types.ts';
import { WalCheckpointer } from './wal-checkpointer.ts';
import { LeaseHolders, type LeaseHolderOptions } from './lease-holder.ts';
import { LookupBatcher } from './lookup-batch.ts';
import { noStats, noteDelivery, noteFailure, toRegistration, toStoredRetry, withUnwritten, type PendingStats, type RegistrationRow, type RetryRowFields } from './rows.ts';
import type { Notification } from '../providers/types.ts';

export const MIGRATIONS: string[] = [
  `CREATE TABLE registrations (
     node TEXT PRIMARY KEY,
     secret TEXT NOT NULL,
     app TEXT NOT NULL,
     token TEXT NOT NULL,
     device_key TEXT NOT NULL,
     bound_domain TEXT,
     registered_at INTEGER NOT NULL,
     renewed_at INTEGER NOT NULL,
     last_push_at INTEGER,
     last_error_at INTEGER,
     last_error TEXT,
     push_count INTEGER NOT NULL DEFAULT 0
   ) WITHOUT ROWID;
   CREATE UNIQUE INDEX registrations_by_device ON registrations (app, device_key);
   CREATE TABLE pending_retries (
     node TEXT PRIMARY KEY,
     due_at INTEGER NOT NULL,
     attempt INTEGER NOT NULL,
     urgency TEXT NOT NULL,
     reason TEXT NOT NULL
   ) WITHOUT ROWID;
   CREATE INDEX pending_retries_by_due ON pending_retries (due_at);
   CREATE TABLE blocked_tokens (
     app TEXT NOT NULL,
     token TEXT NOT NULL,
     until INTEGER NOT NULL,
     PRIMARY KEY (app, token)
   ) WITHOUT ROWID;
   CREATE INDEX blocked_tokens_by_until ON blocked_tokens (until);`,
  // Issue #11: a retry row holds the whole push (the node column is the target key).
  `ALTER TABLE pending_retries ADD COLUMN dialect TEXT NOT NULL DEFAULT 'xep0357';
   ALTER TABLE pending_retries ADD COLUMN app TEXT NOT NULL DEFAULT '';
   ALTER TABLE pending_retries ADD COLUMN request TEXT;
   ALTER TABLE pending_retries ADD COLUMN notification TEXT;
   ALTER TABLE pending_retries ADD COLUMN first_attempt_at INTEGER NOT NULL DEFAULT 0;
   ALTER TABLE pending_retries ADD COLUMN revision INTEGER NOT NULL DEFAULT 1;`,
  // Issue #10: count one JID's registrations (max_per_jid), find expired ones, and keep the block
  // list's size in a counter instead of a count(*) per insert.
  `CREATE INDEX registrations_by_key ON registrations (device_key);
   CREATE INDEX registrations_by_activity ON registrations (max(renewed_at, coalesce(last_push_at, 0)));
   CREATE TABLE blocked_tokens_count (id INTEGER PRIMARY KEY CHECK (id = 1), n INTEGER NOT NULL);
   INSERT INTO blocked_tokens_count (id, n) SELECT 1, count(*) FROM blocked_tokens;`,
  // Push 2.0 (issue #14): the client's pinned JWT public key.
  `ALTER TABLE registrations ADD COLUMN push2_key TEXT;`,
  // Issue #13: the per-key throttle window (push.min_interval_ms) as a row, like PostgreSQL's.
  `CREATE TABLE throttle_windows (key TEXT PRIMARY KEY, last_sent INTEGER NOT NULL) WITHOUT ROWID;
   CREATE INDEX throttle_windows_by_last_sent ON throttle_windows (last_sent);`,
  // Who holds a retry's lease (lease-holder.ts), so a restart takes back what a killed process held.
  `ALTER TABLE pending_retries ADD COLUMN leased_by TEXT;`,
];

/**
 * How long a write waits for another connection's lock. Short: the serving thread must never
 * block for seconds; a failed bookkeeping write is kept and retried asynchronously instead.
 */
export const BUSY_TIMEOUT_MS = 75;
const WRITE_RETRY_MIN_MS = 250;
const WRITE_RETRY_MAX_MS = 30_000;
/** Bookkeeping kept in memory while the database refuses writes; beyond it the oldest is dropped (counters only). */
const UNWRITTEN_LIMIT = 200_000;
/** Every this many throttle claims, rows past their window (which mean nothing) are dropped. */
export const THROTTLE_SWEEP_EVERY = 1024;

interface RetryRow extends RetryRowFields {
  due_at: number;
  request: string | null;
  notification: string | null;
}

const FLUSH_INTERVAL_MS = 250;
const FLUSH_BATCH = 2000;
/**
 * Rows per transaction when flushing in the background. With a million registrations every row is
 * a random B-tree page: one transaction of 2,000 held the event loop for ~45 ms (bench --scale);
 * slices keep each wait to a few ms and let pushes through in between.
 */
const FLUSH_SLICE = 200;
/** Beyond this many unwritten nodes everything is written at once, so memory stays bounded. */
const FLUSH_BACKSTOP = 20_000;
export const BLOCKED_TOKENS_LIMIT = 100_000;

/** `sqlite:data/push.db` → `data/push.db`; `sqlite::memory:` → an in-memory database. */
export function sqlitePathFromUrl(url: string): string {
  const path = url.replace(/^sqlite:(\/\/)?/, '');
  if (path === '') throw new Error(`storage url "${url}" names no file`);
  return path;
}

export interface SqliteStoreOptions extends LeaseHolderOptions {
  /** The checkpoint thread failed; checkpoints happen on the serving connection from now on. */
  onCheckpointFallback?: (error: Error) => void;
  /** A bookkeeping write failed (kept, retried with backoff): told at most once a minute with SQLite's message. */
  onWriteFailure?: (message: string, pending: number) => void;
  onWriteRecovered?: (downMs: number) => void;
  /**
   * PRAGMA max_page_count for this connection: the database may not grow beyond this many pages
   * (writes that need more fail with SQLITE_FULL, as on a full disk). For tests of a full database;
   * unset: SQLite's default (no practical limit).
   */
  maxPageCount?: number;
}

export class SqliteStore implements Store {
  readonly kind = 'sqlite';
  private readonly db: DatabaseSync;
  private readonly statements: Record<string, StatementSync>;
  private readonly pending = new Map<string, PendingStats>();
  private readonly lookups = new LookupBatcher((nodes: string[]) => this.registrationsByNode(nodes), {
    // Alone, the plain statement beats the JSON one; for more, one JSON statement beats a statement
    // each, and from about five nodes BEGIN … COMMIT around them too (bench/lookup-batch.ts).
    lookupOne: (node: string) => this.withPending(this.statements.byNode.get(node) as RegistrationRow | undefined),
  });
  private throttleClaims = 0;
  private flushTimer: NodeJS.Timeout | undefined;
  private flushImmediate: NodeJS.Immediate | undefined;
  /** Set while bookkeeping writes fail: the last error, and when to try again. */
  private writeFailure: { message: string; since: number; delayMs: number; warnedAt: number } | undefined;
  private readonly onWriteFailure: (message: string, pending: number) => void;
  private readonly onWriteRecovered: (downMs: number) => void;
  /** Undefined for an in-memory database, which has no WAL. */
  readonly checkpointer: WalCheckpointer | undefined;
  private readonly leases: LeaseHolders;

  constructor(path: string, options: SqliteStoreOptions = {}) {
    this.onWriteFailure = options.onWriteFailure ?? (() => {});
    this.onWriteRecovered = options.onWriteRecovered ?? (() => {});
    this.leases = new LeaseHolders(options);
    if (path !== ':memory:') mkdirSync(dirname(path), { recursive: true });
    this.db = new DatabaseSync(path);
    this.db.exec(`PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA busy_timeout = ${BUSY_TIMEOUT_MS}; PRAGMA foreign_keys = ON;`);
    this.migrate();
    if (options.maxPageCount !== undefined) this.db.exec(`PRAGMA max_page_count = ${Math.max(1, Math.floor(options.maxPageCount))}`);
    if (path !== ':memory:') this.checkpointer = new WalCheckpointer(this.db, path, { onFallback: options.onCheckpointFallback });
    const p = (sql: string) => this.db.prepare(sql);
    this.statements = {
      byNode: p('SELECT * FROM registrations WHERE node = ?'),
      // One statement is one read transaction, however many nodes the JSON array holds.
      byNodes: p('SELECT * FROM registrations WHERE node IN (SELECT value FROM json_each(?))'),
      byDevice: p('SELECT * FROM registrations WHERE app = ? AND device_key = ?'),
      insert: p(`INSERT INTO registrations (node, secret, app, token, device_key, bound_domain, registered_at, renewed_at,
                   last_push_at, last_error_at, last_error, push_count, push2_key)
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`),
      pinPush2Key: p('UPDATE registrations SET push2_key = ? WHERE node = ? AND push2_key IS NULL'),
      push2KeyOf: p('SELECT push2_key FROM registrations WHERE node = ?'),
      renew: p('UPDATE registrations SET renewed_at = ? WHERE node = ?'),
      remove: p('DELETE FROM registrations WHERE node = ?'),
      removeIfOld: p('DELETE FROM registrations WHERE node = ? AND renewed_at <= ?'),
      delivered: p('UPDATE registrations SET push_count = push_count + ?, last_push_at = ? WHERE node = ?'),
      failed: p('UPDATE registrations SET last_error_at = ?, last_error = ? WHERE node = ?'),
      listFirst: p('SELECT * FROM registrations ORDER BY node LIMIT ?'),
      listAfter: p('SELECT * FROM registrations WHERE node > ? ORDER BY node LIMIT ?'),
      count: p('SELECT count(*) AS n FROM registrations'),
      retryInsert: p('INSERT INTO pending_retries (node, due_at, attempt, urgency, reason) VALUES (?, ?, ?, ?, ?) ON CONFLICT (node) DO NOTHING'),
      retryDelete: p('DELETE FROM pending_retries WHERE node = ?'),
      block: p('INSERT INTO blocked_tokens (app, token, until) VALUES (?, ?, ?) ON CONFLICT (app, token) DO UPDATE SET until = excluded.until'),
      blockedUntil: p('SELECT until FROM blocked_tokens WHERE app = ? AND token = ?'),
      unblockExpired: p('DELETE FROM blocked_tokens WHERE until <= ?'),
      blockedCount: p('SELECT n FROM blocked_tokens_count WHERE id = 1'),
      blockedCountSet: p('UPDATE blocked_tokens_count SET n = ? WHERE id = 1'),
      countByScope: p('SELECT count(*) AS n FROM registrations WHERE device_key >= ? AND device_key < ?'),
      expired: p('SELECT node FROM registrations WHERE max(renewed_at, coalesce(last_push_at, 0)) < ? ORDER BY max(renewed_at, coalesce(last_push_at, 0)) LIMIT ?'),
      unblockOldest: p('DELETE FROM blocked_tokens WHERE (app, token) IN (SELECT app, token FROM blocked_tokens ORDER BY until LIMIT ?)'),
      ping: p('SELECT 1'),
      retrySave: p(`INSERT INTO pending_retries (node, due_at, attempt, urgency, reason, dialect, app, request, notification, first_attempt_at, revision)
                    VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 1)
                    ON CONFLICT (node) DO UPDATE SET due_at = min(due_at, excluded.due_at), attempt = max(attempt, excluded.attempt),
                      urgency = CASE WHEN urgency = 'high' OR excluded.urgency = 'high' THEN 'high' ELSE 'normal' END,
                      reason = excluded.reason, dialect = excluded.dialect, app = excluded.app, request = excluded.request,
                      notification = excluded.notification, first_attempt_at = excluded.first_attempt_at, revision = revision + 1,
                      leased_by = NULL`),
      retryLeaseSelect: p(`SELECT r.*, g.secret AS reg_secret, g.bound_domain AS reg_domain, g.app AS reg_app
                           FROM pending_retries r LEFT JOIN registrations g ON g.node = r.node
                           WHERE r.due_at <= ? ORDER BY r.due_at LIMIT ?`),
      retryLeaseUpdate: p('UPDATE pending_retries SET due_at = ?, leased_by = ? WHERE node = ?'),
      retryHolders: p('SELECT DISTINCT leased_by AS holder FROM pending_retries WHERE leased_by IS NOT NULL'),
      retryRelease: p('UPDATE pending_retries SET due_at = min(due_at, ?), leased_by = NULL WHERE leased_by = ?'),
      // Only the row the lease took (types.ts: a stale lease must not remove or move a newer row).
      retryFinish: p('DELETE FROM pending_retries WHERE node = ? AND revision = ? AND due_at = ?'),
      retryReschedule: p('UPDATE pending_retries SET due_at = ?, attempt = ?, reason = ?, leased_by = NULL WHERE node = ? AND revision = ? AND due_at = ?'),
      countByApp: p('SELECT app, count(*) AS n FROM registrations GROUP BY app'),
      retryCount: p('SELECT count(*) AS n FROM pending_retries'),
      throttleClaim: p(`INSERT INTO throttle_windows (key, last_sent) VALUES (?, ?)
                        ON CONFLICT (key) DO UPDATE SET last_sent = excluded.last_sent WHERE last_sent <= ? RETURNING last_sent`),
      throttleLastSent: p('SELECT last_sent FROM throttle_windows WHERE key = ?'),
      throttleSweep: p('DELETE FROM throttle_windows WHERE last_sent <= ?'),
    };
  }

  private migrate(): void {
    const current = (this.db.prepare('PRAGMA user_version').get() as { user_version: number }).user_version;
    for (let version = current; version < MIGRATIONS.length; version++) {
      this.transaction(() => {
        this.db.exec(MIGRATIONS[version]);
        this.db.exec(`PRAGMA user_version = ${version + 1}`);
      });
    }
  }

  private transaction(work: () => void): void {
    this.db.exec('BEGIN IMMEDIATE');
    try {
      work();
      this.db.exec('COMMIT');
    } catch (error) {
      // SQLite may have rolled back by itself (SQLITE_FULL, SQLITE_IOERR): the first error is the one to report.
      try {
        if (this.db.isTransaction) this.db.exec('ROLLBACK');
      } catch { /* the original error says more */ }
      throw error;
    }
  }

  /** Merges bookkeeping not yet flushed, so readers never see stale counts. */
  private withPending(row: RegistrationRow | undefined): Registration | undefined {
    return row ? withUnwritten(toRegistration(row), this.pending.get(row.node)) : undefined;
  }

  /** Lookups made in one synchronous stretch (a socket read's publishes) share one read transaction (lookup-batch.ts). */
  getByNode(node: string): Promise<Registration | undefined> {
    return this.lookups.lookup(node);
  }

  /**
   * Runs as a microtask (as the lone lookup does), never inside transaction(), whose blocks are
   * synchronous: it sees every write made before it. Bookkeeping is merged at the moment the rows
   * are read, so a flush in between cannot make a count vanish or appear twice.
   */
  private registrationsByNode(nodes: string[]): Array<Registration | undefined> {
    const rows = this.statements.byNodes.all(JSON.stringify(nodes)) as unknown as RegistrationRow[];
    const byNode = new Map(rows.map((row) => [row.node, row]));
    // Each caller gets its own object, even two asking for the same node.
    return nodes.map((node) => this.withPending(byNode.get(node)));
  }

  async getByDevice(app: string, deviceKey: string): Promise<Registration | undefined> {
    return this.withPending(this.statements.byDevice.get(app, deviceKey) as RegistrationRow | undefined);
  }

  async insert(r: Registration, replaces?: string): Promise<void> {
    this.transaction(() => {
      if (replaces !== undefined) {
        // As remove(): the replaced node's retry goes with it (PostgreSQL's insert does the same).
        this.statements.retryDelete.run(replaces);
        this.statements.remove.run(replaces);
      }
      this.insertRow(r);
    });
    // Only once committed: a refused insert keeps the replaced registration's unwritten bookkeeping.
    if (replaces !== undefined) this.pending.delete(replaces);
    this.checkpointer?.noteWrite();
  }

  /** Inside transaction() only. */
  private insertRow(r: Registration): void {
    this.statements.insert.run(r.node, r.secret, r.app, r.token, r.deviceKey, r.boundDomain, r.registeredAt, r.renewedAt,
      r.lastPushAt, r.lastErrorAt, r.lastError, r.pushCount, r.push2Key ?? null);
  }

  async insertMany(registrations: Registration[], replacing = false): Promise<void> {
    if (registrations.length === 0) return;
    this.transaction(() => {
      for (const r of registrations) {
        if (replacing) this.statements.remove.run(r.node);
        this.insertRow(r);
      }
    });
    // Only once committed: a refused batch keeps the replaced registrations' unwritten bookkeeping.
    if (replacing) for (const r of registrations) this.pending.delete(r.node);
    this.checkpointer?.noteWrite();
  }

  async renew(node: string, at: number): Promise<void> {
    this.statements.renew.run(at, node);
    this.checkpointer?.noteWrite();
  }

  async remove(node: string): Promise<boolean> {
    let removed = false;
    this.transaction(() => {
      this.statements.retryDelete.run(node);
      removed = Number(this.statements.remove.run(node).changes) > 0;
    });
    // Only once the row is gone: a refused removal keeps the registration's unwritten bookkeeping.
    this.pending.delete(node);
    this.checkpointer?.noteWrite();
    return removed;
  }

  async removeIfNotRenewedSince(node: string, before: number): Promise<boolean> {
    const removed = Number(this.statements.removeIfOld.run(node, before).changes) > 0;
    if (removed) {
      this.pending.delete(node);
      this.statements.retryDelete.run(node);
      this.checkpointer?.noteWrite();
    }
    return removed;
  }

  private stats(node: string): PendingStats {
    let stats = this.pending.get(node);
    if (!stats) {
      stats = noStats();
      this.pending.set(node, stats);
      if (this.writeFailure) this.boundUnwritten();
      else if (this.pending.size >= FLUSH_BACKSTOP) this.flush();
      else if (this.pending.size >= FLUSH_BATCH) this.flushImmediate ??= setImmediate(() => this.flushSlice()).unref();
      else this.flushTimer ??= setTimeout(() => this.flushSlice(), FLUSH_INTERVAL_MS).unref();
    }
    return stats;
  }

  recordDelivery(node: string, at: number): void {
    noteDelivery(this.stats(node), at);
  }

  recordFailure(node: string, at: number, reason: string): void {
    noteFailure(this.stats(node), at, reason);
  }

  /** Writes all batched bookkeeping in one transaction. */
  flush(): void {
    this.cancelFlush();
    if (this.pending.size === 0) return;
    const batch = [...this.pending];
    this.pending.clear();
    this.write(batch);
  }

  /** Writes the oldest FLUSH_SLICE nodes' bookkeeping; the rest follows on the next turn of the event loop. */
  private flushSlice(): void {
    this.cancelFlush();
    const batch: Array<[string, PendingStats]> = [];
    for (const entry of this.pending) {
      batch.push(entry);
      if (batch.length === FLUSH_SLICE) break;
    }
    for (const [node] of batch) this.pending.delete(node);
    this.write(batch);
    if (this.pending.size > 0) this.flushImmediate = setImmediate(() => this.flushSlice()).unref();
  }

  private cancelFlush(): void {
    if (this.flushTimer) clearTimeout(this.flushTimer);
    if (this.flushImmediate) clearImmediate(this.flushImmediate);
    this.flushTimer = undefined;
    this.flushImmediate = undefined;
  }

  /**
   * Writes a batch of bookkeeping. A failure (disk full, read-only file, SQLITE_BUSY beyond the
   * short busy timeout) never throws to the caller: the batch goes back to the pending map and is
   * written again after a backoff, and health() says degraded until a write succeeds.
   */
  private write(batch: Array<[string, PendingStats]>): void {
    if (batch.length === 0 || !this.db.isOpen) return;
    try {
      this.transaction(() => {
        for (const [node, stats] of batch) {
          if (stats.deliveries > 0) this.statements.delivered.run(stats.deliveries, stats.lastPushAt, node);
          if (stats.lastErrorAt !== null) this.statements.failed.run(stats.lastErrorAt, stats.lastError, node);
        }
      });
    } catch (error) {
      this.keepUnwritten(batch, (error as Error).message);
      return;
    }
    this.checkpointer?.noteWrite();
    this.writesRecovered();
  }

  private writesRecovered(): void {
    if (!this.writeFailure) return;
    const downMs = Date.now() - this.writeFailure.since;
    this.writeFailure = undefined;
    this.onWriteRecovered(downMs);
  }

  private keepUnwritten(batch: Array<[string, PendingStats]>, message: string): void {
    for (const [node, stats] of batch) {
      const newer = this.pending.get(node);
      if (newer) {
        newer.deliveries += stats.deliveries;
        newer.lastPushAt ??= stats.lastPushAt;
        if (newer.lastErrorAt === null) {
          newer.lastErrorAt = stats.lastErrorAt;
          newer.lastError = stats.lastError;
        }
      } else {
        this.pending.set(node, stats);
      }
    }
    this.noteWriteFailure(message, true);
  }

  /** Degraded until a write succeeds; pending bookkeeping is tried again after a backoff. `warn`: a bookkeeping write (retry rows are reported by their caller). */
  private noteWriteFailure(message: string, warn: boolean): void {
    const now = Date.now();
    const failure = this.writeFailure ?? { message, since: now, delayMs: WRITE_RETRY_MIN_MS / 2, warnedAt: 0 };
    failure.message = message;
    failure.delayMs = Math.min(WRITE_RETRY_MAX_MS, failure.delayMs * 2);
    this.writeFailure = failure;
    if (warn && now - failure.warnedAt >= 60_000) {
      failure.warnedAt = now;
      this.onWriteFailure(message, this.pending.size);
    }
    this.boundUnwritten();
    this.cancelFlush();
    this.flushTimer = setTimeout(() => this.flushSlice(), failure.delayMs).unref();
  }

  /** While writes fail, memory stays bounded: the oldest counters are given up first. */
  private boundUnwritten(): void {
    while (this.pending.size > UNWRITTEN_LIMIT) this.pending.delete(this.pending.keys().next().value as string);
  }

  health(): StoreHealth {
    return this.writeFailure ? { state: 'degraded', detail: `writes (bookkeeping or retries) failing since ${new Date(this.writeFailure.since).toISOString()}: ${this.writeFailure.message}` } : { state: 'ok' };
  }

  async list(options: { after?: string; limit: number }): Promise<Registration[]> {
    this.flush();
    const rows = options.after === undefined
      ? this.statements.listFirst.all(options.limit)
      : this.statements.listAfter.all(options.after, options.limit);
    return (rows as unknown as RegistrationRow[]).map(toRegistration);
  }

  async count(): Promise<number> {
    return (this.statements.count.get() as { n: number }).n;
  }

  async saveRetry(retry: NewRetry): Promise<void> {
    const { push2 } = retry.notification;
    // A Push 2.0 ciphertext is end-to-end encrypted for the device: persisting it reveals nothing.
    const notification = { summary: retry.notification.summary, urgency: retry.notification.urgency, firstAttemptAt: retry.notification.firstAttemptAt,
      ...(push2 ? { push2: { ...push2, ciphertext: push2.ciphertext.toString('base64') } } : {}) };
    try {
      this.statements.retrySave.run(retry.key, retry.dueAt, retry.attempt, retry.notification.urgency, retry.reason, retry.dialect, retry.app,
        JSON.stringify(retry.request), JSON.stringify(notification), retry.firstAttemptAt);
    } catch (error) {
      // The caller keeps the retry in memory; health() says degraded until a write succeeds again.
      this.noteWriteFailure((error as Error).message, false);
      throw error;
    }
    this.checkpointer?.noteWrite();
    this.writesRecovered();
  }

  async leaseDueRetries(now: number, limit: number, leaseUntil: number): Promise<StoredRetry[]> {
    let due: StoredRetry[];
    try {
      due = this.lease(now, limit, leaseUntil, this.leases.own);
    } catch (error) {
      if (this.leases.own === null) throw error;
      // Naming the holder makes each row longer, which a full database refuses (SQLITE_FULL); a
      // lease that names nobody rewrites the due time in place, so the retries still go out.
      due = this.lease(now, limit, leaseUntil, null);
    }
    if (due.length > 0) this.checkpointer?.noteWrite();
    return due;
  }

  private lease(now: number, limit: number, leaseUntil: number, holder: string | null): StoredRetry[] {
    let due: StoredRetry[] = [];
    this.transaction(() => {
      due = (this.statements.retryLeaseSelect.all(now, limit) as unknown as RetryRow[]).map((row) => toStoredRetry(row,
        row.request !== null ? JSON.parse(row.request) as StoredRetry['request'] : null,
        row.notification !== null ? JSON.parse(row.notification) as Notification : null, row.due_at, leaseUntil));
      for (const retry of due) this.statements.retryLeaseUpdate.run(leaseUntil, holder, retry.key);
    });
    return due;
  }

  async releaseLeasesOfGoneHolders(now: number): Promise<number> {
    let released = 0;
    for (const { holder } of this.statements.retryHolders.all() as Array<{ holder: string }>) {
      if (this.leases.isGone(holder)) released += Number(this.statements.retryRelease.run(now, holder).changes);
    }
    if (released > 0) this.checkpointer?.noteWrite();
    return released;
  }

  async finishRetry(key: string, revision: number, leasedUntil: number): Promise<void> {
    if (Number(this.statements.retryFinish.run(key, revision, leasedUntil).changes) > 0) this.checkpointer?.noteWrite();
  }

  async rescheduleRetry(key: string, revision: number, leasedUntil: number, dueAt: number, attempt: number, reason: string): Promise<void> {
    if (Number(this.statements.retryReschedule.run(dueAt, attempt, reason, key, revision, leasedUntil).changes) > 0) this.checkpointer?.noteWrite();
  }

  async countRetries(): Promise<number> {
    return (this.statements.retryCount.get() as { n: number }).n;
  }

  async cancelRetry(node: string): Promise<void> {
    if (Number(this.statements.retryDelete.run(node).changes) > 0) this.checkpointer?.noteWrite();
  }

  async setPush2Key(node: string, key: string): Promise<boolean> {
    if (Number(this.statements.pinPush2Key.run(key, node).changes) > 0) {
      this.checkpointer?.noteWrite();
      return true;
    }
    const row = this.statements.push2KeyOf.get(node) as { push2_key: string | null } | undefined;
    return row?.push2_key === key;
  }

  async claimThrottleWindow(key: string, now: number, intervalMs: number): Promise<number> {
    // One connection, synchronous statements: nothing runs between the claim and the read.
    if (++this.throttleClaims % THROTTLE_SWEEP_EVERY === 0) this.statements.throttleSweep.run(now - intervalMs);
    const claimed = this.statements.throttleClaim.get(key, now, now - intervalMs) !== undefined;
    if (claimed) return 0;
    const row = this.statements.throttleLastSent.get(key) as { last_sent: number };
    return row.last_sent + intervalMs;
  }

  /** The size is kept in blocked_tokens_count: O(log n) per insert, not a count(*). */
  async blockToken(app: string, token: string, until: number): Promise<void> {
    this.transaction(() => {
      let n = (this.statements.blockedCount.get() as { n: number }).n;
      n -= Number(this.statements.unblockExpired.run(Date.now()).changes);
      const known = this.statements.blockedUntil.get(app, token) !== undefined;
      this.statements.block.run(app, token, until);
      if (!known) n += 1;
      if (n > BLOCKED_TOKENS_LIMIT) n -= Number(this.statements.unblockOldest.run(n - BLOCKED_TOKENS_LIMIT).changes);
      this.statements.blockedCountSet.run(Math.max(0, n));
    });
    this.checkpointer?.noteWrite();
  }

  /** Size of the block list, from its counter. */
  async blockedTokenCount(): Promise<number> {
    return (this.statements.blockedCount.get() as { n: number }).n;
  }

  async countByScope(scope: string): Promise<number> {
    // '}' is the byte after '|': the range holds exactly the keys starting with `${scope}|`.
    return (this.statements.countByScope.get(`${scope}|`, `${scope}}`) as { n: number }).n;
  }

  async removeExpired(before: number, limit: number): Promise<string[]> {
    this.flush();
    let nodes: string[] = [];
    this.transaction(() => {
      nodes = (this.statements.expired.all(before, limit) as Array<{ node: string }>).map((row) => row.node);
      for (const node of nodes) {
        this.statements.retryDelete.run(node);
        this.statements.remove.run(node);
      }
    });
    if (nodes.length > 0) this.checkpointer?.noteWrite();
    return nodes;
  }

  async isTokenBlocked(app: string, token: string, now: number): Promise<boolean> {
    const row = this.statements.blockedUntil.get(app, token) as { until: number } | undefined;
    return row !== undefined && row.until > now;
  }

  async countByApp(): Promise<Map<string, number>> {
    const rows = this.statements.countByApp.all() as unknown as Array<{ app: string; n: number }>;
    return new Map(rows.map((row) => [row.app, row.n]));
  }

  async search(query: RegistrationQuery): Promise<RegistrationPage> {
    this.flush();
    const where: string[] = [];
    const values: Array<string | number> = [];
    const prefix = (column: string, value: string) => {
      where.push(`substr(${column}, 1, ?) = ?`);
      values.push(value.length, value);
    };
    if (query.node) prefix('node', query.node);
    if (query.tokenPrefix) prefix('token', query.tokenPrefix);
    if (query.jid) {
      // Made over XMPP by the JID (`jid|device`), or over HTTP naming it (`|jid=<jid>|device`).
      const jid = query.jid.replace(/[\\%_]/g, (c) => `\\${c}`);
      where.push("(device_key LIKE ? ESCAPE '\\' OR device_key LIKE ? ESCAPE '\\')");
      values.push(`${jid}|%`, `|jid=${jid}|%`);
    }
    if (query.app) {
      where.push('app = ?');
      values.push(query.app);
    }
    if (query.failedOnly) where.push('last_error_at IS NOT NULL');
    const condition = where.length > 0 ? `WHERE ${where.join(' AND ')}` : '';
    const order = query.failedOnly ? 'ORDER BY last_error_at DESC, node' : 'ORDER BY node';
    const { n } = this.db.prepare(`SELECT count(*) AS n FROM registrations ${condition}`).get(...values) as { n: number };
    const rows = this.db.prepare(`SELECT * FROM registrations ${condition} ${order} LIMIT ? OFFSET ?`)
      .all(...values, query.limit, query.offset) as unknown as RegistrationRow[];
    return { registrations: rows.map(toRegistration), total: n };
  }

  async probeWrite(): Promise<void> {
    // A node with a space is never a registration's (nodes are printable ASCII without spaces).
    this.transaction(() => {
      this.statements.retryInsert.run(' write-probe', Number.MAX_SAFE_INTEGER, 0, 'normal', 'readiness probe');
      this.statements.retryDelete.run(' write-probe');
    });
  }

  async ping(): Promise<void> {
    this.statements.ping.get();
  }

  async close(): Promise<void> {
    if (!this.db.isOpen) return;
    this.lookups.flush();
    this.flush();
    this.cancelFlush();
    if (this.writeFailure) this.onWriteFailure(`closing with ${this.pending.size} bookkeeping rows unwritten: ${this.writeFailure.message}`, this.pending.size);
    await this.checkpointer?.close();
    this.db.close();
  }
}
