/**
 * The one typed configuration object, read from a TOML document (see load.ts) and the built-in
 * defaults. Provider-specific keys of `[apps.NAME]` are validated by the provider named there
 * (providers/registry.ts), so this file knows only what every app has.
 */
import { TableReader, type Table } from './reader.ts';
import type { LogFormat, LogLevel } from '../log.ts';

/** A few ms of latency on a push (APNS itself takes tens) for a third less CPU per publish under steady load. */
export const DEFAULT_READ_COALESCE_MS = 2;

export interface XmppConfig {
  componentJid: string;
  serverHost: string;
  serverPort: number;
  componentSecret: string;
  reconnectInitialMs: number;
  reconnectMaxMs: number;
  /** A refused handshake is an operator error; retrying it fast only fills logs. */
  authFailureRetryMs: number;
  maxStanzaBytes: number;
  /** Connect + stream header + handshake must finish within this, or the attempt is abandoned. */
  connectTimeoutMs: number;
  /** The reconnect backoff starts over only after a stream stayed up this long. */
  stableAfterMs: number;
  /** Bytes the component may hold unsent while the socket is congested; beyond, replies are dropped (logged). */
  maxOutboxBytes: number;
  /** After a read, the socket is left unread this long so that close arrivals share one batch; 0 = off. */
  readCoalesceMs: number;
}

export interface HttpConfig {
  enabled: boolean;
  host: string;
  port: number;
  debug: boolean;
  adminToken: string | undefined;
  maxBodyBytes: number;
  /** Take the client address from X-Forwarded-For (behind a reverse proxy) instead of the socket. */
  trustProxy: boolean;
}

/** Registration rules and limits (`[registration]`). A rate of 0 turns that limit off. */
export interface RegistrationConfig {
  /** Registrations neither renewed nor pushed for this many days are removed; 0 = never. */
  expireDays: number;
  /** HTTP /register requests per client address and minute. */
  httpPerIpPerMinute: number;
  /** Ad-hoc registration commands per requesting bare JID and minute. */
  adhocPerJidPerMinute: number;
  /** Ad-hoc registration commands per requesting domain and minute. */
  adhocPerDomainPerMinute: number;
  /** Registrations one bare JID may hold (over XMPP); 0 = no maximum. */
  maxPerJid: number;
}

export interface StorageConfig {
  url: string;
  /** PostgreSQL: connections each instance keeps in its pool (ignored for SQLite). */
  poolSize: number;
}

export interface PushConfig {
  /** How long a provider may take before the publish is answered with a `wait` error. */
  timeoutMs: number;
  /** Pushes on their way at once; more get a `wait` error (our own overload, DESIGN §4). */
  maxInFlight: number;
  /** Retries of a push that a provider asked us to retry later. 0 turns retrying off; absent: no count limit (time decides). */
  retryMaxAttempts: number | undefined;
  /** The longest single wait between two attempts: a longer Retry-After is shortened to it (before issue #11 such a push was dropped). */
  retryMaxDelayS: number;
  /** A push is retried until this long after its first attempt (or the app's ttl, when smaller). */
  retryMaxAgeS: number;
  /** Cap of the exponential backoff (1 s, 2 s, 4 s … with jitter), so devices wake soon after a provider recovers. */
  retryMaxBackoffS: number;
  /** At most one push per node per interval (DESIGN §4); 0 = off. The original's push_appserver_rate_limit. */
  minIntervalMs: number;
  /** A graceful stop waits this long for pushes on their way, then keeps the rest as retries. */
  shutdownTimeoutMs: number;
  /** Distinct tokens called dead with no delivery in between (within the window) that mark an app misconfigured. */
  deadTokenThreshold: number;
  deadTokenWindowS: number;
  /** Publishes per publishing domain and second (every dialect); 0 = no limit. */
  maxPublishesPerDomainPerS: number;
  publishBurstPerDomain: number;
  /** Stateless publishes per publishing domain and second, on top of the limit above. */
  maxStatelessPerDomainPerS: number;
  statelessBurstPerDomain: number;
  /** Stateless pushes on their way at once. */
  maxStatelessInFlight: number;
}

/** The `[push]` table as written keys, for check-config's effective document. */
export function pushDocument(push: PushConfig): Record<string, number> {
  return {
    timeout_ms: push.timeoutMs,
    max_in_flight: push.maxInFlight,
    ...(push.retryMaxAttempts !== undefined ? { retry_max_attempts: push.retryMaxAttempts } : {}),
    retry_max_delay_s: push.retryMaxDelayS,
    retry_max_age_s: push.retryMaxAgeS,
    retry_max_backoff_s: push.retryMaxBackoffS,
    min_interval_ms: push.minIntervalMs,
    shutdown_timeout_ms: push.shutdownTimeoutMs,
    dead_token_threshold: push.deadTokenThreshold,
    dead_token_window_s: push.deadTokenWindowS,
    max_publishes_per_domain_per_s: push.maxPublishesPerDomainPerS,
    publish_burst_per_domain: push.publishBurstPerDomain,
    max_stateless_per_domain_per_s: push.maxStatelessPerDomainPerS,
    stateless_burst_per_domain: push.statelessBurstPerDomain,
    max_stateless_in_flight: push.maxStatelessInFlight,
  };
}

export interface MetricsConfig {
  /** `GET /metrics` (Prometheus text format) on the HTTP listener. */
  enabled: boolean;
  /** When set, scrapes must send `Authorization: Bearer <token>`. */
  token: string | undefined;
  /**
   * The registrations gauge is counted in the store this often: other instances, the CLI and
   * expiry change registrations too, and this process sees only its own events.
   */
  registrationsRecountS: number;
}

export interface AppConfig {
  name: string;
  provider: string;
  /** fpush dialect: publishes for unknown nodes carrying pushModule=<name> go to this app. */
  stateless: boolean;
  /** Push 2.0, snikket-apns compatible: a `<client>` URL `…/<APNS token>#<this app's topic>` is delivered without registration. */
  push2Stateless: boolean;
  /**
   * `allowed_domains`: the only domains that may register for this app (and publish to it); absent:
   * every domain. Lower-cased; a JID's domain must equal one of them.
   */
  allowedDomains: string[] | undefined;
  /** `allowed_ports`: the ports a user-supplied push endpoint may use besides 443 (webpush, unifiedpush). */
  allowedPorts: number[] | undefined;
  /** The app's table; the provider reads its own keys from it. */
  settings: TableReader;
}

/** Conversations' p2 ad-hoc commands: which app each of them registers with (`[dialects.p2]`). */
export interface P2DialectConfig {
  /** `register-push-fcm` / `unregister-push-fcm`; absent: those commands are not offered. */
  fcmApp: string | undefined;
  /** `register-push-apns` / `unregister-push-apns`; absent: those commands are not offered. */
  apnsApp: string | undefined;
}

/** Push 2.0 (`[push2]`, README "Push 2.0"). */
export interface Push2Config {
  /** Accepted JWT `aud` values; default `https://<component_jid>` and `xmpp:<component_jid>`. */
  audiences: string[];
  /** Tolerated clock difference for the JWT's `exp`/`iat`. */
  clockSkewS: number;
}

export interface Config {
  /** Where the configuration came from, for messages ("built-in defaults" or a path). */
  source: string;
  xmpp: XmppConfig;
  http: HttpConfig;
  storage: StorageConfig;
  push: PushConfig;
  push2: Push2Config;
  registration: RegistrationConfig;
  log: { level: LogLevel; format: LogFormat };
  metrics: MetricsConfig;
  apps: Map<string, AppConfig>;
  /** Raw dialect tables (`[dialects.p2]` …), as written (for check-config's effective document). */
  dialects: TableReader;
  p2: P2DialectConfig;
}

export const DEFAULT_COMPONENT_SECRET = 'change-me';

/** What `npm start` runs with when there is no config file. */
export function defaultDocument(): Table {
  return {
    apps: {
      apns: { provider: 'log' },
      fcm: { provider: 'log' },
    },
  };
}

export const MIN_ADMIN_TOKEN = 32;

const APP_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;

export function readConfig(document: Table, source: string): Config {
  const root = new TableReader(source, '', document);

  const x = root.section('xmpp');
  const xmpp: XmppConfig = {
    componentJid: x.nonEmptyString('component_jid', 'push.localhost'),
    serverHost: x.nonEmptyString('server_host', '127.0.0.1'),
    serverPort: x.integer('server_port', 5347, { min: 1, max: 65535 }),
    componentSecret: x.nonEmptyString('component_secret', DEFAULT_COMPONENT_SECRET),
    reconnectInitialMs: x.integer('reconnect_initial_ms', 500, { min: 10 }),
    reconnectMaxMs: x.integer('reconnect_max_ms', 30_000, { min: 10 }),
    authFailureRetryMs: x.integer('auth_failure_retry_ms', 60_000, { min: 10 }),
    maxStanzaBytes: x.integer('max_stanza_bytes', 256 * 1024, { min: 4096 }),
    connectTimeoutMs: x.integer('connect_timeout_ms', 10_000, { min: 100 }),
    stableAfterMs: x.integer('stable_after_ms', 60_000, { min: 0 }),
    maxOutboxBytes: x.integer('max_outbox_bytes', 16 * 1024 * 1024, { min: 64 * 1024 }),
    readCoalesceMs: x.integer('read_coalesce_ms', DEFAULT_READ_COALESCE_MS, { min: 0, max: 50 }),
  };
  if (/[\s/@]/.test(xmpp.componentJid)) x.fail('component_jid', `must be a bare domain such as "push.example.org", got "${xmpp.componentJid}"`);
  if (xmpp.reconnectMaxMs < xmpp.reconnectInitialMs) x.fail('reconnect_max_ms', 'must not be smaller than reconnect_initial_ms');
  x.rejectUnknownKeys();

  const h = root.section('http');
  const http: HttpConfig = {
    enabled: h.boolean('enabled', true),
    host: h.nonEmptyString('host', '127.0.0.1'),
    port: h.integer('port', 5280, { min: 0, max: 65535 }),
    debug: h.boolean('debug', false),
    adminToken: h.optionalString('admin_token'),
    maxBodyBytes: h.integer('max_body_bytes', 16 * 1024, { min: 1024 }),
    trustProxy: h.boolean('trust_proxy', false),
  };
  if (http.adminToken !== undefined && http.adminToken.trim() === '') h.fail('admin_token', 'must not be empty: remove the key or set a long random token');
  // It opens the admin page and keys its session cookies (a captured cookie lets a short token be guessed offline).
  if (http.adminToken !== undefined && http.adminToken.length < MIN_ADMIN_TOKEN) {
    h.fail('admin_token', `must be at least ${MIN_ADMIN_TOKEN} characters (e.g. the output of \`openssl rand -hex 32\`)`);
  }
  if (http.debug && http.adminToken === undefined) {
    h.fail('debug', `the debug pages show registrations: set http.admin_token (at least ${MIN_ADMIN_TOKEN} characters) too`);
  }
  h.rejectUnknownKeys();

  const s = root.section('storage');
  const storage: StorageConfig = { url: s.nonEmptyString('url', 'sqlite:data/push.db'), poolSize: s.integer('pool_size', 10, { min: 1, max: 1000 }) };
  if (!/^(sqlite:|postgres:\/\/|postgresql:\/\/)/.test(storage.url)) {
    s.fail('url', `must start with "sqlite:" (e.g. "sqlite:data/push.db") or "postgres://", got "${storage.url}"`);
  }
  s.rejectUnknownKeys();

  const p = root.section('push');
  const push: PushConfig = {
    timeoutMs: p.integer('timeout_ms', 15_000, { min: 100 }),
    maxInFlight: p.integer('max_in_flight', 10_000, { min: 1 }),
    retryMaxAttempts: p.has('retry_max_attempts') ? p.integer('retry_max_attempts', undefined, { min: 0 }) : undefined,
    retryMaxDelayS: p.integer('retry_max_delay_s', 3600, { min: 1 }),
    retryMaxAgeS: p.integer('retry_max_age_s', 3600, { min: 1 }),
    retryMaxBackoffS: p.integer('retry_max_backoff_s', 300, { min: 1 }),
    minIntervalMs: p.integer('min_interval_ms', 0, { min: 0 }),
    shutdownTimeoutMs: p.integer('shutdown_timeout_ms', 10_000, { min: 0 }),
    deadTokenThreshold: p.integer('dead_token_threshold', 5, { min: 1 }),
    deadTokenWindowS: p.integer('dead_token_window_s', 60, { min: 1 }),
    maxPublishesPerDomainPerS: p.integer('max_publishes_per_domain_per_s', 200, { min: 0 }),
    publishBurstPerDomain: 0,
    maxStatelessPerDomainPerS: p.integer('max_stateless_per_domain_per_s', 20, { min: 0 }),
    statelessBurstPerDomain: 0,
    maxStatelessInFlight: p.integer('max_stateless_in_flight', 500, { min: 1 }),
  };
  push.publishBurstPerDomain = p.integer('publish_burst_per_domain', Math.max(1, push.maxPublishesPerDomainPerS * 10), { min: 1 });
  push.statelessBurstPerDomain = p.integer('stateless_burst_per_domain', Math.max(1, push.maxStatelessPerDomainPerS * 2), { min: 1 });
  p.rejectUnknownKeys();

  const push2 = readPush2(root.section('push2'), xmpp.componentJid);

  const r = root.section('registration');
  const registration: RegistrationConfig = {
    expireDays: r.integer('expire_days', 180, { min: 0, max: 36_500 }),
    httpPerIpPerMinute: r.integer('http_per_ip_per_minute', 30, { min: 0 }),
    adhocPerJidPerMinute: r.integer('adhoc_per_jid_per_minute', 10, { min: 0 }),
    adhocPerDomainPerMinute: r.integer('adhoc_per_domain_per_minute', 600, { min: 0 }),
    maxPerJid: r.integer('max_per_jid', 50, { min: 0 }),
  };
  r.rejectUnknownKeys();

  const l = root.section('log');
  const log = {
    level: l.oneOf('level', ['debug', 'info', 'warn', 'error'] as const, 'info'),
    format: l.oneOf('format', ['text', 'json'] as const, 'text'),
  };
  l.rejectUnknownKeys();

  const m = root.section('metrics');
  const metrics: MetricsConfig = {
    enabled: m.boolean('enabled', true),
    token: m.optionalString('token'),
    registrationsRecountS: m.integer('registrations_recount_s', 60, { min: 1 }),
  };
  if (metrics.token !== undefined && metrics.token.trim() === '') m.fail('token', 'must not be empty (leave it out for an open /metrics)');
  m.rejectUnknownKeys();

  const appsTable = root.section('apps');
  const apps = new Map<string, AppConfig>();
  for (const name of Object.keys(appsTable.table)) {
    if (!APP_NAME.test(name)) appsTable.fail(name, 'an app name may use letters, digits, ".", "_" and "-" (at most 64)');
    const a = appsTable.section(name);
    const provider = a.nonEmptyString('provider');
    const stateless = a.boolean('stateless', false);
    const push2Stateless = a.boolean('push2_stateless', false);
    if (push2Stateless && provider !== 'apns') a.fail('push2_stateless', `is for apns apps (snikket-apns compatible <client> URLs carry an APNS token), not "${provider}"`);
    const allowedDomains = a.optionalStringList('allowed_domains')?.map((domain) => domain.trim().toLowerCase().replace(/\.$/, ''));
    if (allowedDomains?.length === 0) a.fail('allowed_domains', 'an empty list would refuse everyone: remove the key to allow every domain');
    const allowedPorts = a.optionalIntegerList('allowed_ports', { min: 1, max: 65535 });
    apps.set(name, { name, provider, stateless, push2Stateless, allowedDomains, allowedPorts, settings: a });
  }
  if (apps.size === 0) root.fail('apps', 'no app is configured: add at least one [apps.NAME] table with a provider');

  const dialects = root.section('dialects');
  const p2 = readP2Dialect(dialects.section('p2'), apps);
  dialects.rejectUnknownKeys();
  root.rejectUnknownKeys();

  return { source, xmpp, http, storage, push, push2, registration, log, metrics, apps, dialects, p2 };
}

function readPush2(table: TableReader, componentJid: string): Push2Config {
  // A list, or one comma-separated string (so an environment override can set it).
  const audiences = table.optionalStringList('audiences')?.map((audience) => audience.trim()) ?? [`https://${componentJid}`, `xmpp:${componentJid}`];
  if (audiences.length === 0) table.fail('audiences', `an empty list would refuse every notification: remove the key for the default ["https://${componentJid}", "xmpp:${componentJid}"]`);
  const push2 = { audiences, clockSkewS: table.integer('clock_skew_s', 60, { min: 0, max: 3600 }) };
  table.rejectUnknownKeys();
  return push2;
}

function readP2Dialect(table: TableReader, apps: Map<string, AppConfig>): P2DialectConfig {
  const appNamed = (key: string): string | undefined => {
    const name = table.optionalString(key);
    if (name !== undefined && !apps.has(name)) {
      table.fail(key, `names no configured app "${name}" (configured: ${[...apps.keys()].sort().join(', ')})`);
    }
    return name;
  };
  const p2 = { fcmApp: appNamed('fcm_app'), apnsApp: appNamed('apns_app') };
  table.rejectUnknownKeys();
  return p2;
}
