/**
 * What operators' tools poll: `GET /metrics` (Prometheus text format, optionally behind a bearer
 * token) and `GET /push_appserver/v1/ready` (readiness: 200 READY, or 503 with one line per
 * reason; JSON with `Accept: application/json`). `/health` stays the liveness answer (v1.ts).
 * File paths and key ids (in providers' degraded details) are shown only to the admin token.
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import type { HttpReply, HttpRequest, HttpServer } from './server.ts';
import { text } from './server.ts';
import { BASE } from './v1.ts';

export function secretMatches(expected: string, given: string): boolean {
  return timingSafeEqual(createHash('sha256').update(expected).digest(), createHash('sha256').update(given).digest());
}

export function bearerOf(request: HttpRequest): string | undefined {
  const auth = request.headers.authorization ?? '';
  return /^Bearer /i.test(auth) ? auth.slice(7).trim() : undefined;
}

export interface ReadinessInputs {
  component(): { state: string; lastError: string | undefined };
  store: { kind: string; ping(): Promise<void>; probeWrite(): Promise<void> };
  apps(): Iterable<{ name: string; providerKind: string; status: { state: 'ok' | 'degraded'; detail?: string } }>;
  credentialsExpiry(): Iterable<{ app: string; file: string; expiresAt: number }>;
}

export interface ReadinessReport {
  ready: boolean;
  reasons: string[];
  component: { state: string; last_error?: string };
  store: { kind: string; reads: boolean; writes: boolean; error?: string };
  apps: Record<string, { provider: string; state: string; detail?: string; credentials_expire?: string; credentials_file?: string }>;
}

/** Provider details name key ids and certificate files: anonymous callers get the reason's kind only. */
function publicDetail(detail: string | undefined): string | undefined {
  if (detail === undefined) return undefined;
  return /credential/i.test(detail) ? 'the push service rejected the app\'s credentials' : 'the provider reports a problem';
}

export async function readiness(inputs: ReadinessInputs, privileged: boolean): Promise<ReadinessReport> {
  const reasons: string[] = [];
  const component = inputs.component();
  if (component.state !== 'online') {
    reasons.push(`component not connected (${component.state}${component.lastError && privileged ? `: ${component.lastError}` : ''})`);
  }
  const store: ReadinessReport['store'] = { kind: inputs.store.kind, reads: true, writes: true };
  try {
    await inputs.store.ping();
  } catch (error) {
    store.reads = false;
    store.writes = false;
    store.error = (error as Error).message;
  }
  if (store.reads) {
    try {
      await inputs.store.probeWrite();
    } catch (error) {
      store.writes = false;
      store.error = (error as Error).message;
    }
  }
  if (!store.reads) reasons.push(`store (${store.kind}) does not answer${privileged ? `: ${store.error}` : ''}`);
  else if (!store.writes) reasons.push(`store (${store.kind}) cannot write${privileged ? `: ${store.error}` : ''}`);
  if (!privileged) delete store.error;

  const expiries = new Map([...inputs.credentialsExpiry()].map((expiry) => [expiry.app, expiry]));
  const apps: ReadinessReport['apps'] = {};
  for (const app of inputs.apps()) {
    const detail = privileged ? app.status.detail : publicDetail(app.status.detail);
    const expiry = expiries.get(app.name);
    apps[app.name] = {
      provider: app.providerKind,
      state: app.status.state,
      ...(detail !== undefined ? { detail } : {}),
      ...(expiry ? { credentials_expire: new Date(expiry.expiresAt).toISOString() } : {}),
      ...(expiry && privileged ? { credentials_file: expiry.file } : {}),
    };
    if (app.status.state !== 'ok') reasons.push(`app ${app.name} degraded${detail ? `: ${detail}` : ''}`);
  }
  return {
    ready: reasons.length === 0,
    reasons,
    component: { state: component.state, ...(privileged && component.lastError ? { last_error: component.lastError } : {}) },
    store,
    apps,
  };
}

export interface OpsRoutesOptions {
  readiness: ReadinessInputs;
  adminToken: string | undefined;
  /** Absent when `metrics.enabled = false`. */
  metrics?: { text(): Promise<string>; contentType: string; token: string | undefined };
}

function wantsJson(request: HttpRequest): boolean {
  return /\bapplication\/json\b/.test(request.headers.accept ?? '');
}

export function addOpsRoutes(http: HttpServer, options: OpsRoutesOptions): void {
  http.add('GET', `${BASE}/ready`, async (request): Promise<HttpReply> => {
    const given = bearerOf(request);
    const privileged = options.adminToken !== undefined && given !== undefined && secretMatches(options.adminToken, given);
    const report = await readiness(options.readiness, privileged);
    const status = report.ready ? 200 : 503;
    if (wantsJson(request)) return { status, body: JSON.stringify(report) + '\n', contentType: 'application/json' };
    return text(status, report.ready ? 'READY' : `NOT READY\n${report.reasons.join('\n')}`);
  });

  const metrics = options.metrics;
  if (!metrics) return;
  http.add('GET', '/metrics', async (request): Promise<HttpReply> => {
    if (metrics.token !== undefined) {
      const given = bearerOf(request);
      if (given === undefined || !secretMatches(metrics.token, given)) {
        return text(401, 'ERROR\nmetrics token required (Authorization: Bearer TOKEN)', { 'www-authenticate': 'Bearer realm="metrics"' });
      }
    }
    return { status: 200, body: await metrics.text(), contentType: metrics.contentType };
  });
}
