/**
 * The telemetry port: what the core reports as it works, so operators can see it (issue #12).
 * The core calls these; an adapter outside the core (Prometheus through prom-client) implements
 * them. The core never imports a metrics library, and a missing adapter costs nothing.
 *
 * Label values are fixed vocabularies, so a hostile publisher can never create new series.
 */

/** How a push reached us: each dialect enters the one dispatch pipeline with its own resolver. */
export type Dialect = 'xep0357' | 'stateless' | 'http' | 'push2';

/** How a publish (or HTTP push) was answered. */
export type PublishResult = 'delivered' | 'coalesced' | 'not_found' | 'forbidden' | 'temporary' | 'rejected' | 'limited';

/** What one request to a push service came to. `error`: it threw or timed out (no answer). */
export type ProviderRequestOutcome = 'delivered' | 'token_dead' | 'retry' | 'credentials_rejected' | 'rejected' | 'error';

export type RegistrationAction = 'created' | 'renewed' | 'removed' | 'token_dead' | 'expired';

/**
 * Who made or changed a registration: the HTTP API, an ad-hoc command (XEP-0050), or the expiry
 * sweep (`expiry`: registrations it removes are counted after the fact, per app, origin unknown).
 */
export type RegistrationDialect = 'http' | 'xmpp' | 'expiry';

export type RetryResult = 'delivered' | 'rescheduled' | 'token_dead' | 'expired' | 'dropped';

export interface Telemetry {
  /** A publish answered; `app` is "" when no app could be named (unknown node). */
  publishAnswered(app: string, dialect: Dialect, result: PublishResult, seconds: number): void;
  /** One request to a provider; `status` is the HTTP status when the service answered. */
  providerRequest(app: string, provider: string, outcome: ProviderRequestOutcome, status: number | undefined, seconds: number): void;
  retryFinished(app: string, result: RetryResult): void;
  /** The number of pending retries changed (absolute value). */
  retriesPending(count: number): void;
  registrationChanged(app: string, dialect: RegistrationDialect, action: RegistrationAction): void;
}

/** The default: nothing is measured. */
export const noTelemetry: Telemetry = {
  publishAnswered() {},
  providerRequest() {},
  retryFinished() {},
  retriesPending() {},
  registrationChanged() {},
};
