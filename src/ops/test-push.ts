/**
 * One test push to one registration through its app's provider, for the admin page's button and
 * `push-appserver send-test`: the provider's answer is the point, so it is returned as it came
 * (kind, HTTP status, reason or id), and nothing is decided from it (a dead token is shown, not
 * removed: the operator asked a question).
 */
import type { App } from '../core/apps.ts';
import type { ProviderRequestOutcome, Telemetry } from '../core/telemetry.ts';
import type { Outcome } from '../providers/types.ts';
import type { Registration } from '../store/types.ts';

export interface TestPushResult {
  at: number;
  outcome: Outcome | { kind: 'error'; reason: string; status?: undefined };
  seconds: number;
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

export async function sendTestPush(app: App, registration: Registration, options: { timeoutMs: number; telemetry?: Telemetry }): Promise<TestPushResult> {
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
  return { at, outcome, seconds };
}
