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
import type { PendingRetry, Registration, Store } from './types.ts';
import { WalCheckpointer } from './wal-checkpointer.ts';
import type { Urgency } from '../providers/types.ts';

const MIGRATIONS: string[] = [
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
  // Push 2.0 (issue #14): the client's pinned JWT public key.
  `ALTER TABLE registrations ADD COLUMN push2_key TEXT;`,
];

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

interface PendingStats {
  deliveries: number;
  lastPushAt: number | null;
  lastErrorAt: number | null;
  lastError: string | null;
}

interface Row {
  node: string;
  secret: string;
  app: string;
  token: string;
  device_key: string;
  bound_domain: string | null;
  registered_at: number;
  renewed_at: number;
  last_push_at: number | null;
  last_error_at: number | null;
  last_error: string | null;
  push_count: number;
  push2_key: string | null;
}

function toRegistration(row: Row): Registration {
  return {
    node: row.node,
    secret: row.secret,
    app: row.app,
    token: row.token,
    deviceKey: row.device_key,
    boundDomain: row.bound_domain,
    registeredAt: row.registered_at,
    renewedAt: row.renewed_at,
    lastPushAt: row.last_push_at,
    lastErrorAt: row.last_error_at,
    lastError: row.last_error,
    pushCount: row.push_count,
    push2Key: row.push2_key ?? null,
  };
}

/** `sqlite:data/push.db` → `data/push.db`; `sqlite::memory:` → an in-memory database. */
export function sqlitePathFromUrl(url: string): string {
  const path = url.replace(/^sqlite:(\/\/)?/, '');
  if (path === '') throw new Error(`storage url "${url}" names no file`);
  return path;
}

export interface SqliteStoreOptions {
  /** The checkpoint thread failed; checkpoints happen on the serving connection from now on. */
  onCheckpointFallback?: (error: Error) => void;
}

export class SqliteStore implements Store {
  readonly kind = 'sqlite';
  private readonly db: DatabaseSync;
  private readonly statements: Record<string, StatementSync>;
  private readonly pending = new Map<string, PendingStats>();
  private flushTimer: NodeJS.Timeout | undefined;
  private flushImmediate: NodeJS.Immediate | undefined;
  /** Undefined for an in-memory database, which has no WAL. */
  readonly checkpointer: WalCheckpointer | undefined;

  constructor(path: string, options: SqliteStoreOptions = {}) {
    if (path !== ':memory:') mkdirSync(dirname(path), { recursive: true });
    this.db = new DatabaseSync(path);
    this.db.exec('PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA busy_timeout = 5000; PRAGMA foreign_keys = ON;');
    this.migrate();
    if (path !== ':memory:') this.checkpointer = new WalCheckpointer(this.db, path, { onFallback: options.onCheckpointFallback });
    const p = (sql: string) => this.db.prepare(sql);
    this.statements = {
      byNode: p('SELECT * FROM registrations WHERE node = ?'),
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
      retryDue: p('SELECT * FROM pending_retries WHERE due_at <= ? ORDER BY due_at LIMIT ?'),
      retryDelete: p('DELETE FROM pending_retries WHERE node = ?'),
      block: p('INSERT INTO blocked_tokens (app, token, until) VALUES (?, ?, ?) ON CONFLICT (app, token) DO UPDATE SET until = excluded.until'),
      blockedUntil: p('SELECT until FROM blocked_tokens WHERE app = ? AND token = ?'),
      unblockExpired: p('DELETE FROM blocked_tokens WHERE until <= ?'),
      blockedCount: p('SELECT count(*) AS n FROM blocked_tokens'),
      unblockOldest: p('DELETE FROM blocked_tokens WHERE (app, token) IN (SELECT app, token FROM blocked_tokens ORDER BY until LIMIT ?)'),
      ping: p('SELECT 1'),
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
      this.db.exec('ROLLBACK');
      throw error;
    }
  }

  /** Merges bookkeeping not yet flushed, so readers never see stale counts. */
  private withPending(row: Row | undefined): Registration | undefined {
    if (!row) return undefined;
    const registration = toRegistration(row);
    const stats = this.pending.get(registration.node);
    if (stats) {
      registration.pushCount += stats.deliveries;
      if (stats.lastPushAt !== null) registration.lastPushAt = stats.lastPushAt;
      if (stats.lastErrorAt !== null) {
        registration.lastErrorAt = stats.lastErrorAt;
        registration.lastError = stats.lastError;
      }
    }
    return registration;
  }

  async getByNode(node: string): Promise<Registration | undefined> {
    return this.withPending(this.statements.byNode.get(node) as Row | undefined);
  }

  async getByDevice(app: string, deviceKey: string): Promise<Registration | undefined> {
    return this.withPending(this.statements.byDevice.get(app, deviceKey) as Row | undefined);
  }

  async insert(r: Registration, replaces?: string): Promise<void> {
    this.transaction(() => {
      if (replaces !== undefined) {
        this.statements.remove.run(replaces);
        this.pending.delete(replaces);
      }
      this.statements.insert.run(r.node, r.secret, r.app, r.token, r.deviceKey, r.boundDomain, r.registeredAt, r.renewedAt,
        r.lastPushAt, r.lastErrorAt, r.lastError, r.pushCount, r.push2Key ?? null);
    });
    this.checkpointer?.noteWrite();
  }

  async renew(node: string, at: number): Promise<void> {
    this.statements.renew.run(at, node);
    this.checkpointer?.noteWrite();
  }

  async remove(node: string): Promise<boolean> {
    this.pending.delete(node);
    this.statements.retryDelete.run(node);
    const removed = Number(this.statements.remove.run(node).changes) > 0;
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
      stats = { deliveries: 0, lastPushAt: null, lastErrorAt: null, lastError: null };
      this.pending.set(node, stats);
      if (this.pending.size >= FLUSH_BACKSTOP) this.flush();
      else if (this.pending.size >= FLUSH_BATCH) this.flushImmediate ??= setImmediate(() => this.flushSlice()).unref();
      else this.flushTimer ??= setTimeout(() => this.flushSlice(), FLUSH_INTERVAL_MS).unref();
    }
    return stats;
  }

  recordDelivery(node: string, at: number): void {
    const stats = this.stats(node);
    stats.deliveries += 1;
    stats.lastPushAt = at;
  }

  recordFailure(node: string, at: number, reason: string): void {
    const stats = this.stats(node);
    stats.lastErrorAt = at;
    stats.lastError = reason;
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

  private write(batch: Array<[string, PendingStats]>): void {
    if (batch.length === 0) return;
    this.transaction(() => {
      for (const [node, stats] of batch) {
        if (stats.deliveries > 0) this.statements.delivered.run(stats.deliveries, stats.lastPushAt, node);
        if (stats.lastErrorAt !== null) this.statements.failed.run(stats.lastErrorAt, stats.lastError, node);
      }
    });
    this.checkpointer?.noteWrite();
  }

  async list(options: { after?: string; limit: number }): Promise<Registration[]> {
    this.flush();
    const rows = options.after === undefined
      ? this.statements.listFirst.all(options.limit)
      : this.statements.listAfter.all(options.after, options.limit);
    return (rows as unknown as Row[]).map(toRegistration);
  }

  async count(): Promise<number> {
    return (this.statements.count.get() as { n: number }).n;
  }

  async scheduleRetry(retry: PendingRetry): Promise<boolean> {
    const scheduled = Number(this.statements.retryInsert.run(retry.node, retry.dueAt, retry.attempt, retry.urgency, retry.reason).changes) > 0;
    if (scheduled) this.checkpointer?.noteWrite();
    return scheduled;
  }

  async takeDueRetries(now: number, limit: number): Promise<PendingRetry[]> {
    let due: PendingRetry[] = [];
    this.transaction(() => {
      const rows = this.statements.retryDue.all(now, limit) as unknown as Array<{ node: string; due_at: number; attempt: number; urgency: Urgency; reason: string }>;
      due = rows.map((row) => ({ node: row.node, dueAt: row.due_at, attempt: row.attempt, urgency: row.urgency, reason: row.reason }));
      for (const retry of due) this.statements.retryDelete.run(retry.node);
    });
    if (due.length > 0) this.checkpointer?.noteWrite();
    return due;
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

  async blockToken(app: string, token: string, until: number): Promise<void> {
    this.transaction(() => {
      this.statements.unblockExpired.run(Date.now());
      this.statements.block.run(app, token, until);
      const { n } = this.statements.blockedCount.get() as { n: number };
      if (n > BLOCKED_TOKENS_LIMIT) this.statements.unblockOldest.run(n - BLOCKED_TOKENS_LIMIT);
    });
    this.checkpointer?.noteWrite();
  }

  async isTokenBlocked(app: string, token: string, now: number): Promise<boolean> {
    const row = this.statements.blockedUntil.get(app, token) as { until: number } | undefined;
    return row !== undefined && row.until > now;
  }

  async ping(): Promise<void> {
    this.statements.ping.get();
  }

  async close(): Promise<void> {
    if (!this.db.isOpen) return;
    this.flush();
    await this.checkpointer?.close();
    this.db.close();
  }
}
