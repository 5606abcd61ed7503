/**
 * Apple Push Notification service (`provider = "apns"`): `POST /3/device/<token>` over one
 * long-lived HTTP/2 session per app (more with `connections`), with token (.p8 JWT) or TLS
 * certificate auth. The pieces live in ./apns/: config, request (headers and payload),
 * provider-token (the JWT), responses (answer → Outcome).
 *
 * References: Apple, "Sending notification requests to APNs", "Handling notification responses
 * from APNs", "Establishing a token-based connection to APNs", "Establishing a certificate-based
 * connection to APNs"; DESIGN §7.
 */
import { Http2Client, Http2TransportError, type Http2Response } from './http2-client.ts';
import { parseApnsConfig, type ApnsConfig } from './apns/config.ts';
import { ProviderTokens, type ProviderToken } from './apns/provider-token.ts';
import { buildApnsRequest } from './apns/request.ts';
import { answerOf, outcomeFromApnsResponse } from './apns/responses.ts';
import type { Notification, Outcome, Provider, ProviderContext, ProviderFactory, ProviderStatus, PushTarget } from './types.ts';

export type { ApnsConfig } from './apns/config.ts';

/** Device tokens are hex; Apple's are 64 characters today and it says they may grow. */
const TOKEN_SYNTAX = /^[0-9a-fA-F]{64,200}$/;

export function validateApnsToken(token: string): string | null {
  if (token.length < 64 || token.length > 200) return `an APNS device token has 64 to 200 hex digits, got ${token.length} characters`;
  return TOKEN_SYNTAX.test(token) ? null : 'an APNS device token has only hex digits (0-9, a-f)';
}

export interface ApnsProviderOptions {
  /** The clock for JWT ages and apns-expiration; tests move it. */
  now?: () => number;
  /** Replaces the configured request timeout (tests). */
  requestTimeoutMs?: number;
}

function shortToken(token: string): string {
  return `${token.slice(0, 8)}…${token.slice(-4)}`;
}

export class ApnsProvider implements Provider {
  private readonly config: ApnsConfig;
  private readonly logger: ProviderContext['logger'];
  private readonly now: () => number;
  private readonly client: Http2Client;
  /** Undefined with certificate auth. */
  readonly tokens: ProviderTokens | undefined;
  private state: ProviderStatus = { state: 'ok' };

  constructor(config: ApnsConfig, context: ProviderContext, options: ApnsProviderOptions = {}) {
    this.config = config;
    this.logger = context.logger;
    this.now = options.now ?? (() => Date.now());
    const { auth } = config;
    this.client = new Http2Client({
      name: `apns:${context.app}`,
      origin: config.origin,
      ca: config.ca,
      ...(auth.kind === 'certificate' ? { cert: auth.cert, key: auth.key, pfx: auth.pfx, passphrase: auth.passphrase } : {}),
      connections: config.connections,
      requestTimeoutMs: options.requestTimeoutMs ?? config.requestTimeoutMs,
      logger: context.logger,
    });
    this.tokens = auth.kind === 'token' ? new ProviderTokens({ key: auth.key, keyId: auth.keyId, teamId: auth.teamId, now: this.now }) : undefined;
  }

  validateToken(token: string): string | null {
    return validateApnsToken(token);
  }

  async send(target: PushTarget, notification: Notification): Promise<Outcome> {
    // Junk never reaches Apple, even from a registration older than the validation.
    const invalid = validateApnsToken(target.token);
    if (invalid) return { kind: 'rejected', reason: invalid };
    const built = buildApnsRequest(this.config, notification, this.now());
    if (!built.ok) {
      this.logger.error('APNS payload over the limit; not sent', { node: target.node, mode: built.mode, bytes: built.bytes, limit: built.limit });
      return { kind: 'rejected', reason: `payload of ${built.bytes} bytes is over the APNS limit of ${built.limit} for ${built.mode} pushes` };
    }
    const { request } = built;
    const path = `/3/device/${target.token}`;
    let token = this.tokens?.current();
    // ExpiredProviderToken earns one retry with a new token (if one may be made: provider-token.ts).
    for (let attempt = 0; ; attempt += 1) {
      const headers = token ? { ...request.headers, authorization: `bearer ${token.jwt}` } : request.headers;
      let response: Http2Response;
      try {
        response = await this.client.request({ method: 'POST', path, headers, body: request.payload });
      } catch (error) {
        if (!(error instanceof Http2TransportError)) throw error;
        if (error.tlsAuthFailure) return this.noted({ kind: 'credentials-rejected', reason: `APNS refused our TLS client certificate: ${error.message}` });
        return this.noted({ kind: 'retry-after', ms: 0, reason: `APNS unreachable: ${error.message}` });
      }
      if (response.status === 403 && token && attempt === 0 && answerOf(response.body).reason === 'ExpiredProviderToken') {
        const replacement = this.replaceExpired(token);
        if (replacement) {
          token = replacement;
          continue;
        }
      }
      const outcome = outcomeFromApnsResponse(response, this.now());
      outcome.status = response.status;
      if (outcome.kind === 'token-dead') this.logger.info('APNS says the device token is dead', { node: target.node, token: shortToken(target.token), reason: outcome.reason, since: outcome.since });
      return this.noted(outcome);
    }
  }

  private replaceExpired(rejected: ProviderToken): ProviderToken | undefined {
    const replacement = this.tokens!.replaceExpired(rejected);
    if (replacement === undefined) {
      this.logger.error('APNS calls a provider token younger than 20 minutes expired; not replacing it (check the system clock)', { issued_at: new Date(rejected.issuedAtMs).toISOString() });
    } else if (replacement.jwt !== rejected.jwt) {
      this.logger.info('APNS provider token expired; retrying with a new one');
    }
    return replacement;
  }

  /** Keeps status(): degraded from a credentials rejection until a push is delivered again. */
  private noted(outcome: Outcome): Outcome {
    if (outcome.kind === 'delivered' && this.state.state !== 'ok') {
      this.logger.info('APNS accepts our credentials again');
      this.state = { state: 'ok' };
    } else if (outcome.kind === 'credentials-rejected') {
      const { auth } = this.config;
      const which = auth.kind === 'token' ? `key ${auth.keyId} of team ${auth.teamId}` : `certificate ${auth.subject}`;
      const detail = `APNS (${this.config.environment}) rejected our credentials (${which}): ${outcome.reason}`;
      if (this.state.detail !== detail) this.logger.error(`${detail}; pushes for this app fail until the configuration is fixed`, { topic: this.config.topic, origin: this.config.origin });
      this.state = { state: 'degraded', detail };
    }
    return outcome;
  }

  status(): ProviderStatus {
    return this.state;
  }

  close(): Promise<void> {
    return this.client.close();
  }
}

export const apnsProvider: ProviderFactory<ApnsConfig> = {
  parseConfig: parseApnsConfig,
  create(config, context): Provider {
    return new ApnsProvider(config, context);
  },
};
