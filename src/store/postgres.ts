/**
 * The shared store: PostgreSQL through `postgres` (porsager; pure JS, tagged-template queries that
 * are always parameterised, its own pool and reconnect). Several push-appserver instances use one
 * database: everything they must agree on (registrations, the retry queue, the block list) lives
 * here and every check-and-change is one statement or one transaction.
 *
 * Migrations are numbered, recorded in `schema_migrations` and applied at open inside a transaction
 * holding an advisory lock, so instances starting at once apply each migration exactly once.
 * Push bookkeeping (counts, last push, last error) is batched like the SQLite store's and written
 * in the background with one UPDATE per batch; a batch that fails (database away) is merged back
 * and written later. A lost connection makes queries throw (publishes get `wait`, `ping()` fails
 * so health reports it) and the driver connects again on the next query: no restart needed.
 */
import { randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import type { ConnectionOptions } from 'node:tls';
import postgres from 'postgres';
import type { Notification } from '../providers/types.ts';
import type { NewRetry, Registration, RegistrationPage, RegistrationQuery, Store, StoreHealth, StoredRetry } from './types.ts';
import { noStats, noteDelivery, noteFailure, registrationColumns, toRegistration, toStoredRetry, withUnwritten, type PendingStats, type RegistrationRow, type RetryRowFields } from './rows.ts';
import { LookupBatcher } from './lookup-batch.ts';
import { LeaseHolders, type LeaseHolderOptions } from './lease-holder.ts';

/** Each entry is one migration; never edit one that has shipped, append a new one. */
const MIGRATIONS: string[] = [
  `CREATE TABLE registrations (
     node TEXT PRIMARY KEY,
     secret TEXT NOT NULL,
     app TEXT NOT NULL,
     token TEXT NOT NULL,
     device_key TEXT NOT NULL,
     bound_domain TEXT,
     registered_at BIGINT NOT NULL,
     renewed_at BIGINT NOT NULL,
     last_push_at BIGINT,
     last_error_at BIGINT,
     last_error TEXT,
     push_count BIGINT NOT NULL DEFAULT 0
   );
   CREATE UNIQUE INDEX registrations_by_device ON registrations (app, device_key);
   CREATE TABLE pending_retries (
     node TEXT PRIMARY KEY,
     due_at BIGINT NOT NULL,
     attempt INTEGER NOT NULL,
     urgency TEXT NOT NULL,
     reason TEXT NOT NULL
   );
   CREATE INDEX pending_retries_by_due ON pending_retries (due_at);
   CREATE TABLE blocked_tokens (
     app TEXT NOT NULL,
     token TEXT NOT NULL,
     until BIGINT NOT NULL,
     PRIMARY KEY (app, token)
   );
   CREATE INDEX blocked_tokens_by_until ON blocked_tokens (until);`,
  // Issue #11: a retry row holds the whole push (the node column is the target key), leased by revision.
  `ALTER TABLE pending_retries ADD COLUMN dialect TEXT NOT NULL DEFAULT 'xep0357';
   ALTER TABLE pending_retries ADD COLUMN app TEXT NOT NULL DEFAULT '';
   ALTER TABLE pending_retries ADD COLUMN request JSONB;
   ALTER TABLE pending_retries ADD COLUMN notification JSONB;
   ALTER TABLE pending_retries ADD COLUMN first_attempt_at BIGINT NOT NULL DEFAULT 0;
   ALTER TABLE pending_retries ADD COLUMN revision INTEGER NOT NULL DEFAULT 1;`,
  // Issue #10: one JID's registrations (byte order, whatever the database's collation), expiry by
  // activity, and the block list's size in a counter row instead of a count(*) per insert.
  `CREATE INDEX registrations_by_key ON registrations (device_key COLLATE "C");
   CREATE INDEX registrations_by_activity ON registrations (greatest(renewed_at, coalesce(last_push_at, 0)));
   CREATE TABLE blocked_tokens_count (id INTEGER PRIMARY KEY CHECK (id = 1), n BIGINT NOT NULL);
   INSERT INTO blocked_tokens_count (id, n) SELECT 1, count(*) FROM blocked_tokens;`,
  // Push 2.0 (issue #14): the client's pinned JWT public key.
  `ALTER TABLE registrations ADD COLUMN push2_key TEXT;`,
  // Issue #13: the per-key throttle window (push.min_interval_ms), shared by the instances.
  `CREATE TABLE throttle_windows (key TEXT PRIMARY KEY, last_sent BIGINT NOT NULL, claim TEXT NOT NULL);
   CREATE INDEX throttle_windows_by_last_sent ON throttle_windows (last_sent);`,
  // Who holds a retry's lease (lease-holder.ts), so a restart takes back what a killed process held.
  `ALTER TABLE pending_retries ADD COLUMN leased_by TEXT;`,
];

/** pg_advisory_xact_lock key: "push-appserver migrations" (any constant works; this one is ours). */
const MIGRATION_LOCK = 0x70757368_6d6967n;

const FLUSH_INTERVAL_MS = 250;
/** Nodes per UPDATE; one round trip writes a whole batch. */
const FLUSH_BATCH = 2000;
/** Beyond this many unwritten nodes (database away for long) the oldest bookkeeping is dropped. */
const PENDING_LIMIT = 100_000;
export const BLOCKED_TOKENS_LIMIT = 100_000;
export const DEFAULT_POOL_SIZE = 10;
/** Every this many throttle claims, rows past their window (which mean nothing) are dropped. */
const THROTTLE_SWEEP_EVERY = 1024;
/** Registrations per multi-row INSERT (insertMany). */
const INSERT_CHUNK = 1000;
/** Nodes per lookup query: a burst of publishes is a few queries, none with a huge parameter. */
const LOOKUP_BATCH = 500;

interface RetryRow extends RetryRowFields {
  /** The due time before this lease. */
  leased_from: number;
  request: StoredRetry['request'] | null;
  notification: Notification | null;
}

export interface PostgresStoreOptions extends LeaseHolderOptions {
  /** Connections in the pool (`storage.pool_size`). */
  poolSize?: number;
  /** Background bookkeeping could not be written (it is kept and written later). */
  onFlushError?: (error: Error) => void;
  /** Environment for PGSSLROOTCERT (tests pass their own). */
  env?: NodeJS.ProcessEnv;
}

/** The password-free form of a URL, for messages. */
export function redactUrl(url: string): string {
  return url.replace(/\/\/([^:@/]*):[^@]*@/, '//$1:***@');
}

/**
 * libpq's `sslmode` (disable, allow, prefer, require, verify-ca, verify-full) and `sslrootcert`
 * (URL parameter, else PGSSLROOTCERT) as the driver's `ssl` option. As in libpq, `require` with a
 * root certificate named verifies the server's chain like `verify-ca`.
 */
export function tlsOption(sslmode: string | undefined, rootCertPath: string | undefined, url: string): false | 'prefer' | 'require' | ConnectionOptions {
  const mode = sslmode ?? 'disable';
  const ca = () => (rootCertPath !== undefined && rootCertPath !== 'system' ? readFileSync(rootCertPath, 'utf8') : undefined);
  switch (mode) {
    case 'disable':
      return false;
    case 'allow':
    case 'prefer':
      return 'prefer';
    case 'require':
      if (rootCertPath === undefined) return 'require';
      return { ca: ca(), rejectUnauthorized: true, checkServerIdentity: () => undefined };
    case 'verify-ca':
      return { ca: ca(), rejectUnauthorized: true, checkServerIdentity: () => undefined };
    case 'verify-full':
      return { ca: ca(), rejectUnauthorized: true };
    default:
      throw new Error(`storage url "${redactUrl(url)}": sslmode must be one of disable, allow, prefer, require, verify-ca, verify-full; got "${mode}"`);
  }
}

/** Our own URL parameters are taken out; the driver would send any other as a server setting. */
function connectionSettings(url: string, env: NodeJS.ProcessEnv): { url: string; ssl: ReturnType<typeof tlsOption> } {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    throw new Error(`storage url "${redactUrl(url)}" is not a valid URL (postgres://user:password@host:port/database)`);
  }
  const sslmode = parsed.searchParams.get('sslmode') ?? env.PGSSLMODE;
  const rootCert = parsed.searchParams.get('sslrootcert') ?? env.PGSSLROOTCERT;
  parsed.searchParams.delete('sslmode');
  parsed.searchParams.delete('sslrootcert');
  parsed.searchParams.delete('ssl');
  return { url: parsed.toString(), ssl: tlsOption(sslmode ?? undefined, rootCert ?? undefined, url) };
}

/**
 * BIGINT columns hold epoch milliseconds and counts: well inside a double's exact range. Times may
 * come fractional (a jittered backoff): rounded to the millisecond, where PostgreSQL would refuse them.
 */
const bigintAsNumber = {
  to: 20,
  from: [20],
  serialize: (value: number) => String(Math.round(value)),
  parse: (value: string) => Number(value),
};

type Sql = postgres.Sql<{ bigint: number }>;

/** `{"a","b\"c"}`: every element quoted and escaped, so none is read as NULL or split at a comma. */
function textArrayLiteral(values: string[]): string {
  return `{${values.map((value) => `"${value.replace(/[\\"]/g, '\\$&')}"`).join(',')}}`;
}

export class PostgresStore implements Store {
  readonly kind = 'postgres';
  private readonly sql: Sql;
  private readonly onFlushError: (error: Error) => void;
  private readonly leases: LeaseHolders;
  /** Bookkeeping not yet written. */
  private pending = new Map<string, PendingStats>();
  /** Bookkeeping being written right now: still merged into reads until the write is done. */
  private writing = new Map<string, PendingStats>();
  private readonly lookups = new LookupBatcher((nodes: string[]) => this.registrationsByNode(nodes), {
    maxBatch: LOOKUP_BATCH,
    lookupOne: (node: string) => this.registrationByNode(node),
  });
  private flushTimer: NodeJS.Timeout | undefined;
  private flushing: Promise<void> | undefined;
  private closed = false;
  private throttleClaims = 0;
  /** Set while background bookkeeping writes or retry saves fail; cleared by the next that succeeds. */
  private writeFailure: { since: number; message: string } | undefined;
  /** The migrations this open applied (empty when the schema was current). */
  appliedAtOpen: number[] = [];

  private constructor(sql: Sql, options: PostgresStoreOptions) {
    this.sql = sql;
    this.onFlushError = options.onFlushError ?? (() => {});
    this.leases = new LeaseHolders(options);
  }

  /** Connects, runs the migrations not yet applied and returns the store. */
  static async open(url: string, options: PostgresStoreOptions = {}): Promise<PostgresStore> {
    const settings = connectionSettings(url, options.env ?? process.env);
    const sql = postgres(settings.url, {
      max: options.poolSize ?? DEFAULT_POOL_SIZE,
      ssl: settings.ssl as postgres.Options<{}>['ssl'],
      // A database that does not answer must fail a publish with `wait` soon, not after 30 s.
      connect_timeout: 5,
      idle_timeout: 60,
      onnotice: () => {},
      // No array parameters or columns: skipping the type query on every new connection also avoids
      // the driver's unhandled rejection when a connection dies during that query (porsager/postgres#1223).
      fetch_types: false,
      types: { bigint: bigintAsNumber },
      connection: { application_name: 'push-appserver' },
    }) as unknown as Sql;
    const store = new PostgresStore(sql, options);
    try {
      store.appliedAtOpen = await store.migrate();
    } catch (error) {
      await sql.end({ timeout: 1 });
      throw new Error(`storage url "${redactUrl(url)}": ${(error as Error).message}`);
    }
    return store;
  }

  /** Applies missing migrations; the advisory lock makes a second instance wait, then find nothing to do. */
  async migrate(): Promise<number[]> {
    return await this.sql.begin(async (tx) => {
      await tx`SELECT pg_advisory_xact_lock(${String(MIGRATION_LOCK)}::bigint)`;
      await tx`CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())`;
      const done = new Set((await tx<Array<{ version: number }>>`SELECT version FROM schema_migrations`).map((row) => row.version));
      const applied: number[] = [];
      for (let index = 0; index < MIGRATIONS.length; index++) {
        const version = index + 1;
        if (done.has(version)) continue;
        await tx.unsafe(MIGRATIONS[index]);
        await tx`INSERT INTO schema_migrations (version) VALUES (${version})`;
        applied.push(version);
      }
      return applied;
    }) as number[];
  }

  /** The migrations this build knows (for `migrate`'s report). */
  static get migrationCount(): number {
    return MIGRATIONS.length;
  }

  private merged(row: RegistrationRow | undefined): Registration | undefined {
    return row ? withUnwritten(toRegistration(row), this.writing.get(row.node), this.pending.get(row.node)) : undefined;
  }

  /**
   * Lookups made in one synchronous stretch (a socket read's publishes) share one query
   * (lookup-batch.ts). A failed query (the database away) fails each of them with its error, as
   * their own queries would have; health is ping()'s business, as before.
   */
  getByNode(node: string): Promise<Registration | undefined> {
    // PostgreSQL refuses a NUL in text: that lookup fails alone, as before, not with its batch.
    if (node.includes('\0')) return this.registrationByNode(node);
    return this.lookups.lookup(node);
  }

  private async registrationByNode(node: string): Promise<Registration | undefined> {
    const [row] = await this.sql<RegistrationRow[]>`SELECT * FROM registrations WHERE node = ${node}`;
    return this.merged(row);
  }

  private async registrationsByNode(nodes: string[]): Promise<Array<Registration | undefined>> {
    // An array literal, not a JS array: with fetch_types off the driver cannot serialise arrays.
    const rows = await this.sql<RegistrationRow[]>`SELECT * FROM registrations WHERE node = ANY(${textArrayLiteral(nodes)}::text[])`;
    const byNode = new Map(rows.map((row) => [row.node, row]));
    // Each caller gets its own object, even two asking for the same node.
    return nodes.map((node) => this.merged(byNode.get(node)));
  }

  async getByDevice(app: string, deviceKey: string): Promise<Registration | undefined> {
    const [row] = await this.sql<RegistrationRow[]>`SELECT * FROM registrations WHERE app = ${app} AND device_key = ${deviceKey}`;
    return this.merged(row);
  }

  async insert(r: Registration, replaces?: string): Promise<void> {
    await this.sql.begin(async (tx) => {
      if (replaces !== undefined) {
        await tx`DELETE FROM pending_retries WHERE node = ${replaces}`;
        await tx`DELETE FROM registrations WHERE node = ${replaces}`;
      }
      await tx`INSERT INTO registrations ${tx(registrationColumns(r))}`;
    });
    if (replaces !== undefined) this.forget(replaces);
  }

  async insertMany(registrations: Registration[], replacing = false): Promise<void> {
    if (registrations.length === 0) return;
    // One multi-row INSERT per chunk, all chunks in one transaction: 13 parameters a row stay far
    // below the protocol's 65,535.
    await this.sql.begin(async (tx) => {
      for (let start = 0; start < registrations.length; start += INSERT_CHUNK) {
        const chunk = registrations.slice(start, start + INSERT_CHUNK);
        if (replacing) await tx`DELETE FROM registrations WHERE node = ANY(${textArrayLiteral(chunk.map((r) => r.node))}::text[])`;
        await tx`INSERT INTO registrations ${tx(chunk.map(registrationColumns))}`;
      }
    });
    if (replacing) for (const r of registrations) this.forget(r.node);
  }

  async renew(node: string, at: number): Promise<void> {
    await this.sql`UPDATE registrations SET renewed_at = ${at} WHERE node = ${node}`;
  }

  async remove(node: string): Promise<boolean> {
    this.forget(node);
    const [, removed] = await this.sql.begin(async (tx) => [
      await tx`DELETE FROM pending_retries WHERE node = ${node}`,
      await tx`DELETE FROM registrations WHERE node = ${node}`,
    ]);
    return removed.count > 0;
  }

  async removeIfNotRenewedSince(node: string, before: number): Promise<boolean> {
    const removed = await this.sql.begin(async (tx) => {
      const result = await tx`DELETE FROM registrations WHERE node = ${node} AND renewed_at <= ${before}`;
      if (result.count > 0) await tx`DELETE FROM pending_retries WHERE node = ${node}`;
      return result.count > 0;
    });
    if (removed) this.forget(node);
    return removed as boolean;
  }

  private forget(node: string): void {
    this.pending.delete(node);
    this.writing.delete(node);
  }

  private stats(node: string): PendingStats {
    let stats = this.pending.get(node);
    if (!stats) {
      stats = noStats();
      this.pending.set(node, stats);
      if (this.pending.size > PENDING_LIMIT) {
        const oldest = this.pending.keys().next().value as string;
        this.pending.delete(oldest);
      }
      if (this.pending.size >= FLUSH_BATCH) this.scheduleFlush(0);
      else this.scheduleFlush(FLUSH_INTERVAL_MS);
    }
    return stats;
  }

  private scheduleFlush(delayMs: number): void {
    if (this.closed || this.flushing) return;
    if (this.flushTimer && delayMs > 0) return;
    if (this.flushTimer) clearTimeout(this.flushTimer);
    this.flushTimer = setTimeout(() => {
      this.flushTimer = undefined;
      void this.flush();
    }, delayMs).unref();
  }

  recordDelivery(node: string, at: number): void {
    noteDelivery(this.stats(node), at);
  }

  recordFailure(node: string, at: number, reason: string): void {
    noteFailure(this.stats(node), at, reason);
  }

  /** Writes all batched bookkeeping (in batches of FLUSH_BATCH); one flush at a time. */
  flush(): Promise<void> {
    if (this.flushTimer) clearTimeout(this.flushTimer);
    this.flushTimer = undefined;
    this.flushing ??= this.writeAll().finally(() => {
      this.flushing = undefined;
      if (this.pending.size > 0) this.scheduleFlush(FLUSH_INTERVAL_MS);
    });
    return this.flushing;
  }

  private async writeAll(): Promise<void> {
    while (this.pending.size > 0) {
      const batch = new Map<string, PendingStats>();
      for (const [node, stats] of this.pending) {
        batch.set(node, stats);
        this.pending.delete(node);
        if (batch.size === FLUSH_BATCH) break;
      }
      this.writing = batch;
      try {
        await this.write(batch);
        this.writeFailure = undefined;
      } catch (error) {
        // Kept for the next flush: the database may be back by then.
        for (const [node, stats] of batch) this.mergeBack(node, stats);
        if (!this.writeFailure) this.onFlushError(error as Error);
        this.writeFailure = { since: this.writeFailure?.since ?? Date.now(), message: (error as Error).message };
        return;
      } finally {
        this.writing = new Map();
      }
    }
  }

  private mergeBack(node: string, stats: PendingStats): void {
    const newer = this.pending.get(node);
    if (!newer) {
      if (this.pending.size < PENDING_LIMIT) this.pending.set(node, stats);
      return;
    }
    newer.deliveries += stats.deliveries;
    newer.lastPushAt ??= stats.lastPushAt;
    if (newer.lastErrorAt === null) {
      newer.lastErrorAt = stats.lastErrorAt;
      newer.lastError = stats.lastError;
    }
  }

  private async write(batch: Map<string, PendingStats>): Promise<void> {
    const rows = [...batch].map(([node, stats]) => ({
      node, deliveries: stats.deliveries, push_at: stats.lastPushAt, error_at: stats.lastErrorAt, error: stats.lastError,
    }));
    // The batch travels as one JSON document: one statement, one round trip, whatever its size.
    await this.sql`
      UPDATE registrations AS r SET
        push_count = r.push_count + v.deliveries,
        last_push_at = coalesce(v.push_at, r.last_push_at),
        last_error_at = coalesce(v.error_at, r.last_error_at),
        last_error = CASE WHEN v.error_at IS NULL THEN r.last_error ELSE v.error END
      FROM jsonb_to_recordset(${this.sql.json(rows as unknown as postgres.JSONValue)})
           AS v(node text, deliveries bigint, push_at bigint, error_at bigint, error text)
      WHERE r.node = v.node`;
  }

  async list(options: { after?: string; limit: number }): Promise<Registration[]> {
    await this.flush();
    const rows = options.after === undefined
      ? await this.sql<RegistrationRow[]>`SELECT * FROM registrations ORDER BY node LIMIT ${options.limit}`
      : await this.sql<RegistrationRow[]>`SELECT * FROM registrations WHERE node > ${options.after} ORDER BY node LIMIT ${options.limit}`;
    return rows.map((row) => this.merged(row)!);
  }

  async count(): Promise<number> {
    const [row] = await this.sql<Array<{ n: number }>>`SELECT count(*) AS n FROM registrations`;
    return row.n;
  }

  async cancelRetry(key: string): Promise<void> {
    await this.sql`DELETE FROM pending_retries WHERE node = ${key}`;
  }

  /** One statement: a second instance saving the same key at once merges into the row, never duplicates it. */
  async saveRetry(retry: NewRetry): Promise<void> {
    const { push2 } = retry.notification;
    // A Push 2.0 ciphertext is end-to-end encrypted for the device: persisting it reveals nothing.
    const notification = { summary: retry.notification.summary, urgency: retry.notification.urgency, firstAttemptAt: retry.notification.firstAttemptAt,
      ...(push2 ? { push2: { ...push2, ciphertext: push2.ciphertext.toString('base64') } } : {}) };
    try {
      await this.saveRetryRow(retry, notification);
    } catch (error) {
      // The caller keeps the retry in memory; health() says degraded until a write succeeds again (as SQLite's).
      this.writeFailure = { since: this.writeFailure?.since ?? Date.now(), message: (error as Error).message };
      throw error;
    }
    this.writeFailure = undefined;
  }

  private async saveRetryRow(retry: NewRetry, notification: Record<string, unknown>): Promise<void> {
    await this.sql`
      INSERT INTO pending_retries AS p (node, due_at, attempt, urgency, reason, dialect, app, request, notification, first_attempt_at, revision)
      VALUES (${retry.key}, ${retry.dueAt}, ${retry.attempt}, ${retry.notification.urgency}, ${retry.reason}, ${retry.dialect}, ${retry.app},
              ${this.sql.json(retry.request as unknown as postgres.JSONValue)}, ${this.sql.json(notification as unknown as postgres.JSONValue)}, ${retry.firstAttemptAt}, 1)
      ON CONFLICT (node) DO UPDATE SET
        due_at = least(p.due_at, excluded.due_at),
        attempt = greatest(p.attempt, excluded.attempt),
        urgency = CASE WHEN p.urgency = 'high' OR excluded.urgency = 'high' THEN 'high' ELSE 'normal' END,
        reason = excluded.reason, dialect = excluded.dialect, app = excluded.app, request = excluded.request,
        notification = excluded.notification, first_attempt_at = excluded.first_attempt_at, revision = p.revision + 1,
        leased_by = NULL`;
  }

  /**
   * Leases due rows in one statement. SKIP LOCKED: instances leasing at once get disjoint rows and
   * neither waits; the lease (due_at moved to leaseUntil) keeps a crashed instance's rows from being
   * sent again before it ends, and then any instance takes them.
   */
  async leaseDueRetries(now: number, limit: number, leaseUntil: number): Promise<StoredRetry[]> {
    const rows = await this.sql<RetryRow[]>`
      WITH picked AS (
        SELECT node, due_at FROM pending_retries WHERE due_at <= ${now} ORDER BY due_at LIMIT ${limit} FOR UPDATE SKIP LOCKED)
      UPDATE pending_retries AS r SET due_at = ${leaseUntil}, leased_by = ${this.leases.own}
      FROM picked LEFT JOIN registrations g ON g.node = picked.node
      WHERE r.node = picked.node
      RETURNING r.node, picked.due_at AS leased_from, r.attempt, r.urgency, r.reason, r.dialect, r.app, r.request, r.notification,
                r.first_attempt_at, r.revision, g.secret AS reg_secret, g.bound_domain AS reg_domain, g.app AS reg_app`;
    return rows.map((row) => toStoredRetry(row, row.request, row.notification, row.leased_from, leaseUntil)).sort((a, b) => a.dueAt - b.dueAt);
  }

  /**
   * Only the row the lease took (types.ts: a stale lease must not remove or move a newer row).
   * leasedUntil goes through the same rounding as the lease that wrote it, so a fractional one matches.
   */
  async releaseLeasesOfGoneHolders(now: number): Promise<number> {
    const holders = await this.sql<Array<{ holder: string }>>`SELECT DISTINCT leased_by AS holder FROM pending_retries WHERE leased_by IS NOT NULL`;
    let released = 0;
    for (const { holder } of holders) {
      if (!this.leases.isGone(holder)) continue;
      released += (await this.sql`UPDATE pending_retries SET due_at = least(due_at, ${now}), leased_by = NULL WHERE leased_by = ${holder}`).count;
    }
    return released;
  }

  async finishRetry(key: string, revision: number, leasedUntil: number): Promise<void> {
    await this.sql`DELETE FROM pending_retries WHERE node = ${key} AND revision = ${revision} AND due_at = ${leasedUntil}`;
  }

  async rescheduleRetry(key: string, revision: number, leasedUntil: number, dueAt: number, attempt: number, reason: string): Promise<void> {
    await this.sql`UPDATE pending_retries SET due_at = ${dueAt}, attempt = ${attempt}, reason = ${reason}, leased_by = NULL
                   WHERE node = ${key} AND revision = ${revision} AND due_at = ${leasedUntil}`;
  }

  async countRetries(): Promise<number> {
    const [row] = await this.sql<Array<{ n: number }>>`SELECT count(*) AS n FROM pending_retries`;
    return row.n;
  }

  /**
   * One statement. The row is always updated (a no-op update when the window holds), so the row
   * lock orders instances claiming at once and RETURNING shows the row after it; `claim` (unique per
   * call) tells whether this call is the one that opened the window, even within one millisecond.
   */
  async claimThrottleWindow(key: string, now: number, intervalMs: number): Promise<number> {
    if (++this.throttleClaims % THROTTLE_SWEEP_EVERY === 0) {
      await this.sql`DELETE FROM throttle_windows WHERE last_sent <= ${now - intervalMs}`;
    }
    const claim = randomUUID();
    const [row] = await this.sql<Array<{ last_sent: number; claim: string }>>`
      INSERT INTO throttle_windows AS t (key, last_sent, claim) VALUES (${key}, ${now}, ${claim})
      ON CONFLICT (key) DO UPDATE SET
        last_sent = CASE WHEN t.last_sent <= ${now - intervalMs} THEN excluded.last_sent ELSE t.last_sent END,
        claim = CASE WHEN t.last_sent <= ${now - intervalMs} THEN excluded.claim ELSE t.claim END
      RETURNING last_sent, claim`;
    return row.claim === claim ? 0 : row.last_sent + intervalMs;
  }

  /** The size is kept in blocked_tokens_count (its row lock also orders instances blocking at once). */
  async blockToken(app: string, token: string, until: number): Promise<void> {
    await this.sql.begin(async (tx) => {
      const [{ n: before }] = await tx<Array<{ n: number }>>`SELECT n FROM blocked_tokens_count WHERE id = 1 FOR UPDATE`;
      let n = before - (await tx`DELETE FROM blocked_tokens WHERE until <= ${Date.now()}`).count;
      const [{ inserted }] = await tx<Array<{ inserted: boolean }>>`
        INSERT INTO blocked_tokens (app, token, until) VALUES (${app}, ${token}, ${until})
        ON CONFLICT (app, token) DO UPDATE SET until = excluded.until
        RETURNING (xmax = 0) AS inserted`;
      if (inserted) n += 1;
      if (n > BLOCKED_TOKENS_LIMIT) {
        n -= (await tx`DELETE FROM blocked_tokens WHERE (app, token) IN (
                 SELECT app, token FROM blocked_tokens ORDER BY until LIMIT ${n - BLOCKED_TOKENS_LIMIT})`).count;
      }
      await tx`UPDATE blocked_tokens_count SET n = ${Math.max(0, n)} WHERE id = 1`;
    });
  }

  /** Size of the block list, from its counter. */
  async blockedTokenCount(): Promise<number> {
    const [row] = await this.sql<Array<{ n: number }>>`SELECT n FROM blocked_tokens_count WHERE id = 1`;
    return row.n;
  }

  async isTokenBlocked(app: string, token: string, now: number): Promise<boolean> {
    const [row] = await this.sql<Array<{ until: number }>>`SELECT until FROM blocked_tokens WHERE app = ${app} AND token = ${token}`;
    return row !== undefined && row.until > now;
  }

  async setPush2Key(node: string, key: string): Promise<boolean> {
    // One statement decides the race: the first key written wins, a later one only reads it.
    const [row] = await this.sql<Array<{ push2_key: string | null }>>`
      WITH pinned AS (UPDATE registrations SET push2_key = ${key} WHERE node = ${node} AND push2_key IS NULL RETURNING push2_key)
      SELECT push2_key FROM pinned UNION ALL SELECT push2_key FROM registrations WHERE node = ${node} AND NOT EXISTS (SELECT 1 FROM pinned)`;
    return row?.push2_key === key;
  }

  async countByScope(scope: string): Promise<number> {
    // '}' is the byte after '|': the range holds exactly the keys starting with `${scope}|`.
    const [row] = await this.sql<Array<{ n: number }>>`
      SELECT count(*) AS n FROM registrations
      WHERE device_key COLLATE "C" >= ${`${scope}|`} AND device_key COLLATE "C" < ${`${scope}}`}`;
    return row.n;
  }

  async removeExpired(before: number, limit: number): Promise<string[]> {
    await this.flush();
    const nodes = await this.sql.begin(async (tx) => {
      const rows = await tx<Array<{ node: string }>>`
        WITH removed AS (
          DELETE FROM registrations WHERE node IN (
            SELECT node FROM registrations WHERE greatest(renewed_at, coalesce(last_push_at, 0)) < ${before}
            ORDER BY greatest(renewed_at, coalesce(last_push_at, 0)) LIMIT ${limit} FOR UPDATE SKIP LOCKED)
          RETURNING node, greatest(renewed_at, coalesce(last_push_at, 0)) AS active_at)
        SELECT node FROM removed ORDER BY active_at, node`;
      const removed = rows.map((row) => row.node);
      if (removed.length > 0) await tx`DELETE FROM pending_retries WHERE node IN ${tx(removed)}`;
      return removed;
    }) as string[];
    for (const node of nodes) this.forget(node);
    return nodes;
  }

  async countByApp(): Promise<Map<string, number>> {
    const rows = await this.sql<Array<{ app: string; n: number }>>`SELECT app, count(*) AS n FROM registrations GROUP BY app`;
    return new Map(rows.map((row) => [row.app, row.n]));
  }

  async search(query: RegistrationQuery): Promise<RegistrationPage> {
    await this.flush();
    const sql = this.sql;
    const conditions: postgres.PendingQuery<postgres.Row[]>[] = [];
    if (query.node) conditions.push(sql`starts_with(node, ${query.node})`);
    if (query.tokenPrefix) conditions.push(sql`starts_with(token, ${query.tokenPrefix})`);
    if (query.jid) {
      // Made over XMPP by the JID (`jid|device`), or over HTTP naming it (`|jid=<jid>|device`); case-insensitive.
      const jid = query.jid.replace(/[\\%_]/g, (c) => `\\${c}`);
      conditions.push(sql`(device_key ILIKE ${`${jid}|%`} OR device_key ILIKE ${`|jid=${jid}|%`})`);
    }
    if (query.app) conditions.push(sql`app = ${query.app}`);
    if (query.failedOnly) conditions.push(sql`last_error_at IS NOT NULL`);
    const where = conditions.length === 0 ? sql`` : conditions.slice(1).reduce((all, condition) => sql`${all} AND ${condition}`, sql`WHERE ${conditions[0]}`);
    const order = query.failedOnly ? sql`ORDER BY last_error_at DESC, node` : sql`ORDER BY node`;
    const [{ n }] = await sql<Array<{ n: number }>>`SELECT count(*) AS n FROM registrations ${where}`;
    const rows = await sql<RegistrationRow[]>`SELECT * FROM registrations ${where} ${order} LIMIT ${query.limit} OFFSET ${query.offset}`;
    return { registrations: rows.map(toRegistration), total: n };
  }

  async probeWrite(): Promise<void> {
    if (this.closed) throw new Error('the store is closed');
    // A node with a space is never a registration's (nodes are printable ASCII without spaces).
    await this.sql.begin(async (tx) => {
      await tx`INSERT INTO pending_retries (node, due_at, attempt, urgency, reason) VALUES (' write-probe', ${Number.MAX_SAFE_INTEGER}, 0, 'normal', 'readiness probe')
               ON CONFLICT (node) DO NOTHING`;
      await tx`DELETE FROM pending_retries WHERE node = ' write-probe'`;
    });
  }

  health(): StoreHealth {
    if (!this.writeFailure) return { state: 'ok' };
    return { state: 'degraded', detail: `writes (bookkeeping or retries) failing since ${new Date(this.writeFailure.since).toISOString()}: ${this.writeFailure.message}` };
  }

  async ping(): Promise<void> {
    await this.sql`SELECT 1`;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    // Lookups made before the close get their query in before the pool ends.
    this.lookups.flush();
    try {
      await this.flush();
    } finally {
      this.closed = true;
      if (this.flushTimer) clearTimeout(this.flushTimer);
      await this.sql.end({ timeout: 5 });
    }
  }
}
