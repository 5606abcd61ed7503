/**
 * UnifiedPush (`provider = "unifiedpush"`): wakes Google-free Android clients through the
 * distributor the user chose (ntfy, NextPush, …). The registration token is the distributor's
 * endpoint URL; a push is an RFC 8030 §5 POST of the notification body (JSON, ≤ 4096 bytes as the
 * UnifiedPush server spec requires) with TTL and Urgency headers. Status table: push-endpoint.ts.
 *
 * Endpoints are user input, so a registration must not make us probe internal networks: https only
 * (http with `allow_http = true`), and no loopback, link-local or private addresses unless
 * `allow_private = true` (checked at registration for literal IPs and at every connect).
 * Config: allow_http, allow_private, ttl, include_body, ca_file (tests).
 */
import { forbiddenLiteralHost, forbiddenPortReason, type ResolveAll } from './address-guard.ts';
import { DEFAULT_TTL_S, deliveryHeaders, MAX_TOKEN_LENGTH, push2EndpointMessage, pushContent, PushEndpointClient, readAllowedPorts, readCaFile } from './push-endpoint.ts';
import type { Provider, ProviderContext, ProviderFactory } from './types.ts';

export interface UnifiedPushConfig {
  ttlSeconds: number;
  includeBody: boolean;
  allowHttp: boolean;
  allowPrivate: boolean;
  /** Ports besides 443 (allowed_ports); checked unless allow_private. */
  allowedPorts?: number[];
  ca: string | undefined;
}

/** The UnifiedPush server spec caps a message at 4096 bytes. */
export const MAX_MESSAGE_BYTES = 4096;

/** allow_http implies port 80; allowed_ports adds more. */
function portsOf(config: Pick<UnifiedPushConfig, 'allowHttp' | 'allowedPorts'>): number[] {
  return [...(config.allowHttp ? [80] : []), ...(config.allowedPorts ?? [])];
}

export function parseEndpoint(token: string, config: Pick<UnifiedPushConfig, 'allowHttp' | 'allowPrivate' | 'allowedPorts'>): URL | string {
  if (token.length > MAX_TOKEN_LENGTH) return `token longer than ${MAX_TOKEN_LENGTH} characters`;
  if (/[\x00-\x20\x7f]/.test(token)) return 'token must be a URL without spaces or control characters';
  let url: URL;
  try {
    url = new URL(token);
  } catch {
    return 'token must be the distributor\'s endpoint URL';
  }
  if (url.protocol !== 'https:' && !(url.protocol === 'http:' && config.allowHttp)) {
    return config.allowHttp ? 'endpoint must be an http or https URL' : 'endpoint must be an https URL';
  }
  if (url.username !== '' || url.password !== '') return 'endpoint must not carry credentials';
  if (!config.allowPrivate) {
    const literal = forbiddenLiteralHost(url) ?? forbiddenPortReason(url, portsOf(config));
    if (literal) return `endpoint refused: ${literal}`;
  }
  return url;
}

export interface UnifiedPushDependencies {
  resolveAll?: ResolveAll;
  now?: () => number;
  timeoutMs?: number;
}

export function createUnifiedPushProvider(config: UnifiedPushConfig, _context: ProviderContext, dependencies: UnifiedPushDependencies = {}): Provider {
  const client = new PushEndpointClient({
    ca: config.ca,
    allowPrivate: config.allowPrivate,
    allowedPorts: portsOf(config),
    // We send no credentials: a 401/403 is this endpoint refusing, not our key being wrong.
    authFailure: 'rejected',
    resolveAll: dependencies.resolveAll,
    timeoutMs: dependencies.timeoutMs,
    now: dependencies.now,
  });
  return {
    validateToken(token) {
      const parsed = parseEndpoint(token, config);
      return typeof parsed === 'string' ? parsed : null;
    },

    async send(target, notification) {
      const endpoint = parseEndpoint(target.token, config);
      if (typeof endpoint === 'string') return { kind: 'rejected', reason: `stored endpoint is unusable: ${endpoint}` };
      if (notification.push2) {
        // The distributor passes the RFC 8291 body to the app, which decrypts it with its own keys.
        const message = push2EndpointMessage(notification.push2, config.ttlSeconds, endpoint, undefined);
        return typeof message === 'string' ? { kind: 'rejected', reason: message } : client.post(endpoint, message);
      }
      return client.post(endpoint, {
        headers: { ...deliveryHeaders(config.ttlSeconds, notification.urgency), 'content-type': 'application/json' },
        body: pushContent(target.node, notification.summary, config.includeBody, MAX_MESSAGE_BYTES),
      });
    },

    // Failures belong to single endpoints (each user's distributor), never to our configuration.
    status: () => ({ state: 'ok' }),

    async close() {
      client.close();
    },
  };
}

export const unifiedPushProvider: ProviderFactory<UnifiedPushConfig> = {
  parseConfig(settings) {
    const config: UnifiedPushConfig = {
      ttlSeconds: settings.integer('ttl', DEFAULT_TTL_S, { min: 0, max: DEFAULT_TTL_S }),
      includeBody: settings.boolean('include_body', false),
      allowHttp: settings.boolean('allow_http', false),
      allowPrivate: settings.boolean('allow_private', false),
      ca: readCaFile(settings),
      ...readAllowedPorts(settings),
    };
    settings.rejectUnknownKeys();
    return config;
  },

  create(config, context) {
    return createUnifiedPushProvider(config, context);
  },
};
