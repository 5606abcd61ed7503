/**
 * One test push to one registration through its app's provider, for the admin page's button and
 * `push-appserver send-test`: the provider's answer is the point, so it is returned as it came
 * (kind, HTTP status, reason or id). One thing is decided from it, as for any push: a token the
 * service calls dead removes the registration (unless the device re-registered since), because no
 * push will ever reach it again and the operator would otherwise have to remove it by hand.
 */
import type { App } from '../core/apps.ts';
import type { ProviderRequestOutcome, Telemetry } from '../core/telemetry.ts';
import type { Outcome } from '../providers/types.ts';
import type { Registration, Store } from '../store/types.ts';
import { registrationOrigin } from '../core/registrations.ts';

export interface TestPushResult {
  at: number;
  outcome: Outcome | { kind: 'error'; reason: string; status?: undefined };
  seconds: number;
  /** The token was dead and the registration was removed for it. */
  removed?: boolean;
}

export function providerOutcomeLabel(kind: TestPushResult['outcome']['kind']): ProviderRequestOutcome {
  switch (kind) {
    case 'delivered': return 'delivered';
    case 'token-dead': return 'token_dead';
    case 'retry-after': return 'retry';
    case 'credentials-rejected': return 'credentials_rejected';
    case 'rejected': return 'rejected';
    default: return 'error';
  }
}

/** One line: what the push service answered. */
export function describeAnswer(result: TestPushResult): string {
  const { outcome } = result;
  const status = outcome.status !== undefined ? ` (HTTP ${outcome.status})` : '';
  switch (outcome.kind) {
    case 'delivered': return `delivered${status}${outcome.id ? `, id ${outcome.id}` : ''}`;
    case 'token-dead': return `token dead${status}: ${outcome.reason}`;
    case 'retry-after': return `try again later${status}: ${outcome.reason}${outcome.ms > 0 ? ` (retry after ${Math.ceil(outcome.ms / 1000)} s)` : ''}`;
    case 'credentials-rejected': return `our credentials were rejected${status}: ${outcome.reason}`;
    case 'rejected': return `rejected${status}: ${outcome.reason}`;
    case 'error': return `no answer: ${outcome.reason}`;
  }
}

export interface TestPushOptions {
  timeoutMs: number;
  telemetry?: Telemetry;
  /** Where a dead token's registration is removed. */
  store: Pick<Store, 'removeIfNotRenewedSince'>;
}

export async function sendTestPush(app: App, registration: Registration, options: TestPushOptions): Promise<TestPushResult> {
  const started = performance.now();
  const at = Date.now();
  let timer: NodeJS.Timeout | undefined;
  let outcome: TestPushResult['outcome'];
  try {
    outcome = await Promise.race([
      app.provider.send({ app: app.name, node: registration.node, token: registration.token }, { summary: { messageCount: 1 }, urgency: 'normal' }),
      new Promise<TestPushResult['outcome']>((resolve) => {
        timer = setTimeout(() => resolve({ kind: 'error', reason: `no answer from the provider within ${options.timeoutMs} ms` }), options.timeoutMs);
      }),
    ]);
  } catch (error) {
    outcome = { kind: 'error', reason: `provider error: ${(error as Error).message}` };
  } finally {
    clearTimeout(timer);
  }
  const seconds = (performance.now() - started) / 1000;
  options.telemetry?.providerRequest(app.name, app.providerKind, providerOutcomeLabel(outcome.kind), outcome.status, seconds);
  if (outcome.kind !== 'token-dead') return { at, outcome, seconds };
  const removed = await options.store.removeIfNotRenewedSince(registration.node, outcome.since ?? at);
  if (removed) options.telemetry?.registrationChanged(app.name, registrationOrigin(registration), 'token_dead');
  return { at, outcome, seconds, removed };
}
