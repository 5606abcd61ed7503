/**
 * The storage port. Every backend (SQLite embedded, PostgreSQL) implements this and runs the same
 * contract suite (test/unit/store-contract.ts). Times are milliseconds since the epoch.
 */
import type { Urgency } from '../providers/types.ts';

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

export interface PendingRetry {
  node: string;
  dueAt: number;
  attempt: number;
  /** The retried push keeps its urgency; the summary itself is not stored (it may hold message text). */
  urgency: Urgency;
  reason: string;
}

export interface Store {
  readonly kind: string;
  getByNode(node: string): Promise<Registration | undefined>;
  getByDevice(app: string, deviceKey: string): Promise<Registration | undefined>;
  /** Stores a new registration, removing `replaces` (a node) in the same transaction when given. */
  insert(registration: Registration, replaces?: string): Promise<void>;
  renew(node: string, at: number): Promise<void>;
  remove(node: string): Promise<boolean>;
  /** Removes only when not renewed after `before`: a device that re-registered since keeps its registration. */
  removeIfNotRenewedSince(node: string, before: number): Promise<boolean>;
  /** Bookkeeping on the hot path: backends may batch these. */
  recordDelivery(node: string, at: number): void;
  recordFailure(node: string, at: number, reason: string): void;
  list(options: { after?: string; limit: number }): Promise<Registration[]>;
  count(): Promise<number>;

  /** Remembers a push to retry; false when one is already pending for the node (one wake-up is enough). */
  scheduleRetry(retry: PendingRetry): Promise<boolean>;
  /** Removes and returns the retries due at `now`, oldest first. */
  takeDueRetries(now: number, limit: number): Promise<PendingRetry[]>;
  cancelRetry(node: string): Promise<void>;

  /**
   * Push 2.0 key pinning: stores `key` as the registration's push2Key only when it holds none.
   * Returns true when the registration now holds exactly `key` (pinned now or before), false when
   * it holds another key or the node is gone: the first valid key wins, even against a race.
   */
  setPush2Key(node: string, key: string): Promise<boolean>;

  /** Token block list for the stateless dialect: dead tokens are not sent to again until expiry. */
  blockToken(app: string, token: string, until: number): Promise<void>;
  isTokenBlocked(app: string, token: string, now: number): Promise<boolean>;

  /** Throws when the backend cannot answer (for health). */
  ping(): Promise<void>;
  /** Writes pending bookkeeping and closes. */
  close(): Promise<void>;
}
