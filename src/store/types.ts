/**
 * The storage port. Every backend (SQLite embedded, PostgreSQL) implements this and runs the same
 * contract suite (test/unit/store-contract.ts). Times are milliseconds since the epoch.
 */
import type { Notification } from '../providers/types.ts';

export interface Registration {
  /** The XEP-0357 pubsub node: the key every publish is looked up by. */
  node: string;
  secret: string;
  /** The app (`[apps.NAME]`) whose provider delivers to this registration: the original's "type". */
  app: string;
  token: string;
  /**
   * Identifies the device for idempotent re-registration, scoped by who registered it
   * (e.g. "user@example.org|<device id>"), so two users' equal device ids never collide.
   */
  deviceKey: string;
  /** Publishes are accepted only from this domain when set (registrations made over XMPP). */
  boundDomain: string | null;
  registeredAt: number;
  renewedAt: number;
  lastPushAt: number | null;
  lastErrorAt: number | null;
  lastError: string | null;
  pushCount: number;
  /**
   * Push 2.0: the client's JWT public key (base64url of the 65-byte P-256 point), given at
   * registration or pinned from the first notification that verified; null/absent: none yet.
   */
  push2Key?: string | null;
}

/** What the admin page and `stats` search registrations by; every criterion given must match. */
export interface RegistrationQuery {
  /** The node starts with this. */
  node?: string;
  /** The device token starts with this. */
  tokenPrefix?: string;
  /** Registered by this bare JID (over XMPP, or over HTTP naming it), case-insensitively. */
  jid?: string;
  app?: string;
  /** Only registrations whose last push failed, the most recent failure first. */
  failedOnly?: boolean;
  offset: number;
  limit: number;
}

export interface RegistrationPage {
  registrations: Registration[];
  /** How many match in all (for paging). */
  total: number;
}

/**
 * A push that is still owed to a device (issue #11): a provider asked us to retry, a publish was
 * throttled into a later push, or it was on its way when we stopped. The row holds everything the
 * provider request needs, so the retried push is the same push.
 */
export interface StoredRetry {
  /** The target key (a registered node, or `app\0token` for stateless): at most one row per key. */
  key: string;
  /** The dialect the pipeline resolved it as (telemetry label). */
  dialect: string;
  app: string;
  /** What the resolver needs to find the target again (the transport's request minus the summary). */
  request: { dialect: string; node: string; secret: string | null; from: string | null; options: Record<string, string> };
  /** Summary, urgency and first attempt time; the message body only when the app's include_body put it there. */
  notification: Notification;
  /** When the first attempt was made (ms): retries end `retry_max_age_s` after it; expirations count from it. */
  firstAttemptAt: number;
  /** Not sent before this time. While leased: the lease's end. */
  dueAt: number;
  /** Attempts that failed so far (0 for a throttled or interrupted push). */
  attempt: number;
  reason: string;
  /** Bumped by every saveRetry of the key; finishRetry removes only the revision it leased. */
  revision: number;
  /**
   * Set by leaseDueRetries: the `leaseUntil` this lease wrote into the row (dueAt above is the due
   * time before it). Passed back as is to finishRetry and rescheduleRetry, it names this lease.
   */
  leasedUntil: number;
}

/** A retry as saved: the store assigns the revision, a lease sets leasedUntil. */
export type NewRetry = Omit<StoredRetry, 'revision' | 'leasedUntil'>;

export interface StoreHealth {
  state: 'ok' | 'degraded';
  /** What the database said last, when degraded. */
  detail?: string;
}

export interface Store {
  readonly kind: string;
  getByNode(node: string): Promise<Registration | undefined>;
  getByDevice(app: string, deviceKey: string): Promise<Registration | undefined>;
  /** Stores a new registration, removing `replaces` (a node) in the same transaction when given. */
  insert(registration: Registration, replaces?: string): Promise<void>;
  /**
   * Stores new registrations in one transaction (copy-store: a page at a time): all of them, or
   * none when any is refused (a node or device already there); the caller then inserts one by one
   * to learn which. With `replacing`, each one takes the place of what its node holds, every field
   * (copy-store: copies older than the source's); the node's pending retry stays, it is still its.
   */
  insertMany(registrations: Registration[], replacing?: boolean): Promise<void>;
  renew(node: string, at: number): Promise<void>;
  remove(node: string): Promise<boolean>;
  /** Removes only when not renewed after `before`: a device that re-registered since keeps its registration. */
  removeIfNotRenewedSince(node: string, before: number): Promise<boolean>;
  /** Bookkeeping on the hot path: backends may batch these. */
  recordDelivery(node: string, at: number): void;
  recordFailure(node: string, at: number, reason: string): void;
  list(options: { after?: string; limit: number }): Promise<Registration[]>;
  count(): Promise<number>;
  /**
   * Registrations whose deviceKey starts with `${scope}|`, every app together: what one bare JID
   * registered over XMPP (registration.max_per_jid). Backed by an index on device_key alone; a
   * backend may answer with a range scan `device_key >= scope||'|' AND device_key < scope||'}'`
   * (byte order: '}' follows '|').
   */
  countByScope(scope: string): Promise<number>;
  /**
   * Removes at most `limit` registrations neither renewed nor pushed since `before`
   * (`max(renewedAt, lastPushAt ?? 0) < before`, indexed) together with their pending retries, and
   * returns their nodes. Bookkeeping not yet written counts (a backend that batches it writes it first).
   */
  removeExpired(before: number, limit: number): Promise<string[]>;

  /** Removes the pending retry of a key (any revision). */
  cancelRetry(key: string): Promise<void>;

  /*
   * The retry queue (issue #11). Rules every backend keeps:
   * - One row per key. saveRetry inserts, or merges into the row already there: request,
   *   notification, reason, app, dialect and firstAttemptAt become the new ones (the newer push
   *   carries the newer summary), dueAt becomes the earlier of the two, attempt the larger, and
   *   revision is incremented. A new row starts at revision 1.
   * - leaseDueRetries takes up to `limit` rows with dueAt <= now, oldest due first, and in the same
   *   transaction sets their dueAt to `leaseUntil` (callers pass leaseUntil > now), so a second
   *   worker (or this one after a crash) does not send them again before the lease ends; it returns
   *   them with dueAt as it was, their revision, and leasedUntil = leaseUntil. PostgreSQL: UPDATE …
   *   WHERE key IN (SELECT key … ORDER BY due_at LIMIT n FOR UPDATE SKIP LOCKED) RETURNING ….
   * - A row leaves the queue only through finishRetry after the outcome is known, and only the
   *   row that lease took: it deletes the row only when its revision is still the leased one (a
   *   newer push merged meanwhile stays) AND its dueAt is still that lease's leasedUntil.
   * - rescheduleRetry sets dueAt, attempt and reason of the row under the same condition (a no-op
   *   when the row is gone, merged into, leased again, or a new row for the key).
   * - Removing a registration (remove, removeIfNotRenewedSince) removes the retry keyed by its node.
   *
   * Why the lease's end is part of the match (the ABA on revision): revisions restart at 1 when a
   * key's row is deleted and later saved again, so (key, revision) alone does not name a row. Worker
   * A leases K at revision 1 and stalls past its lease; B leases K again (still revision 1),
   * delivers and deletes it; a new push for K fails and is saved as a new row, revision 1 again; A's
   * late finishRetry(K, 1) would delete the new row and lose an accepted push. (revision, dueAt =
   * leasedUntil) tells the rows apart: a lease only takes a row with dueAt <= now and writes
   * leaseUntil > now, so every later lease of the same row holds a strictly later dueAt, whatever
   * the instances' clocks or timeouts; a merge changes the revision; a new row carries the due time
   * its own push was given. Chosen over revisions that never repeat for a key because it needs no
   * schema change: that would take a counter outliving the rows in both schemas and a BIGINT
   * revision on PostgreSQL, plus new migrations. What is left is a coincidence to the millisecond:
   * a new row at A's revision whose dueAt is exactly A's lease end while A is late.
   * rescheduleRetry is guarded alike, so a stale lease cannot move a row another worker holds (it
   * would be sent twice) nor a new row (it would take A's attempt count and due time); after a
   * merge the row keeps the newer push's schedule, which comes back by the lease's end at the latest.
   * Rows leased by a version before this one: after the restart nobody holds those leases; they
   * come back when they end and are leased anew. During a rolling upgrade on PostgreSQL an older
   * instance still finishes and reschedules by key and revision alone, so the gap closes once every
   * instance runs this version.
   */
  saveRetry(retry: NewRetry): Promise<void>;
  leaseDueRetries(now: number, limit: number, leaseUntil: number): Promise<StoredRetry[]>;
  finishRetry(key: string, revision: number, leasedUntil: number): Promise<void>;
  /**
   * Takes back the leases whose holder is gone (lease-holder.ts: a process of this machine and pid
   * namespace that no longer runs, e.g. this server before a kill -9): their rows are due at `now`
   * instead of at their lease's end. Returns how many rows. Every lease records its holder; a
   * reschedule or a merge clears it (the row is no longer that lease's). Safe against the ABA above:
   * a gone holder finishes nothing, and the next lease still writes a later dueAt than any before.
   * During a rolling upgrade a version before this one leases without naming itself, so a row it
   * leases after a gone holder's lease ended may still carry that holder: taken back, it is sent
   * twice at worst.
   */
  releaseLeasesOfGoneHolders(now: number): Promise<number>;
  rescheduleRetry(key: string, revision: number, leasedUntil: number, dueAt: number, attempt: number, reason: string): Promise<void>;
  countRetries(): Promise<number>;

  /**
   * Push 2.0 key pinning: stores `key` as the registration's push2Key only when it holds none.
   * Returns true when the registration now holds exactly `key` (pinned now or before), false when
   * it holds another key or the node is gone: the first valid key wins, even against a race.
   */
  setPush2Key(node: string, key: string): Promise<boolean>;

  /**
   * The per-key throttle window (push.min_interval_ms), shared by every instance on the store.
   * Atomically: when the key has no window or its last send is at least `intervalMs` before `now`,
   * records `now` as its last send and returns 0 (send now); otherwise changes nothing and returns
   * the end of the window (last send + intervalMs), when the merged push may go. Of two instances
   * claiming at once exactly one gets 0. A row past its window means nothing and may be dropped.
   */
  claimThrottleWindow(key: string, now: number, intervalMs: number): Promise<number>;

  /** Token block list for the stateless dialect: dead tokens are not sent to again until expiry. */
  blockToken(app: string, token: string, until: number): Promise<void>;
  isTokenBlocked(app: string, token: string, now: number): Promise<boolean>;

  /** Registrations per app, counted once (at start; the metrics keep the gauge up to date from events). */
  countByApp(): Promise<Map<string, number>>;
  /** Registrations matching the query, ordered by node (or by failure time with `failedOnly`); for operators, not the hot path. */
  search(query: RegistrationQuery): Promise<RegistrationPage>;

  /** Writes and removes a marker in one transaction; throws when the backend cannot write (for readiness). */
  probeWrite(): Promise<void>;

  /** Throws when the backend cannot answer (for health). */
  ping(): Promise<void>;
  /**
   * Degraded while batched bookkeeping writes fail (kept in memory and retried with backoff);
   * ok again after a write succeeds. Backends without batching may omit it.
   */
  health?(): StoreHealth;
  /** Writes pending bookkeeping and closes. */
  close(): Promise<void>;
}
