/**
 * What every SQL store shares: the registrations table's row, its mapping to a Registration, and
 * the batched push bookkeeping (counts, last push, last error) that readers merge in before it is
 * written, so nobody sees stale counts.
 */
import type { Notification, Urgency } from '../providers/types.ts';
import type { Registration, StoredRetry } from './types.ts';

/** A row of the `registrations` table, as both SQLite and PostgreSQL return it. */
export interface RegistrationRow {
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

/** Bookkeeping of one node not yet written. */
export interface PendingStats {
  deliveries: number;
  lastPushAt: number | null;
  lastErrorAt: number | null;
  lastError: string | null;
}

export function toRegistration(row: RegistrationRow): Registration {
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

/** Bookkeeping of a node that nothing has been recorded for yet. */
export function noStats(): PendingStats {
  return { deliveries: 0, lastPushAt: null, lastErrorAt: null, lastError: null };
}

export function noteDelivery(stats: PendingStats, at: number): void {
  stats.deliveries += 1;
  stats.lastPushAt = at;
}

export function noteFailure(stats: PendingStats, at: number, reason: string): void {
  stats.lastErrorAt = at;
  stats.lastError = reason;
}

/** A registration as the columns of its `registrations` row (what an INSERT writes). */
export function registrationColumns(r: Registration): RegistrationRow {
  return {
    node: r.node, secret: r.secret, app: r.app, token: r.token, device_key: r.deviceKey, bound_domain: r.boundDomain,
    registered_at: r.registeredAt, renewed_at: r.renewedAt, last_push_at: r.lastPushAt, last_error_at: r.lastErrorAt,
    last_error: r.lastError, push_count: r.pushCount, push2_key: r.push2Key ?? null,
  };
}

/** Adds bookkeeping not yet written (oldest first) to a registration read from the table. */
export function withUnwritten(registration: Registration, ...unwritten: Array<PendingStats | undefined>): Registration {
  for (const stats of unwritten) {
    if (!stats) continue;
    registration.pushCount += stats.deliveries;
    if (stats.lastPushAt !== null) registration.lastPushAt = stats.lastPushAt;
    if (stats.lastErrorAt !== null) {
      registration.lastErrorAt = stats.lastErrorAt;
      registration.lastError = stats.lastError;
    }
  }
  return registration;
}

/** The columns of a `pending_retries` row (joined with its registration) that both stores read alike. */
export interface RetryRowFields {
  node: string;
  attempt: number;
  urgency: Urgency;
  reason: string;
  dialect: string;
  app: string;
  first_attempt_at: number;
  revision: number;
  reg_secret: string | null;
  reg_domain: string | null;
  reg_app: string | null;
}

/**
 * A leased retry row → the StoredRetry the dispatcher sends again. `request` and `notification`
 * come decoded (each store keeps them its own way); `dueAt` is the due time before the lease,
 * `leasedUntil` the lease's end as the caller passed it.
 */
export function toStoredRetry(row: RetryRowFields, request: StoredRetry['request'] | null, notification: Notification | null, dueAt: number, leasedUntil: number): StoredRetry {
  // Rows written before issue #11 hold only the urgency: the registration supplies the rest.
  const sent = notification ?? { summary: {}, urgency: row.urgency };
  sent.urgency = row.urgency;
  // A Push 2.0 ciphertext travels as base64 inside the JSON document.
  if (sent.push2) sent.push2.ciphertext = Buffer.from(sent.push2.ciphertext as unknown as string, 'base64');
  return {
    key: row.node,
    dialect: row.dialect,
    app: row.app !== '' ? row.app : row.reg_app ?? '',
    request: request ?? { dialect: 'xep0357', node: row.node, secret: row.reg_secret, from: row.reg_domain, options: {} },
    notification: sent,
    firstAttemptAt: row.first_attempt_at !== 0 ? row.first_attempt_at : dueAt,
    dueAt,
    attempt: row.attempt,
    reason: row.reason,
    revision: row.revision,
    leasedUntil,
  };
}
