/**
 * Test doubles for unit tests of the core: a scripted provider (a port, not our own code path) and
 * an app directory over it. Integration tests never use these.
 */
import { AppDirectory } from '../../src/core/apps.ts';
import type { Notification, Outcome, Provider, PushTarget } from '../../src/providers/types.ts';

export interface ScriptedProvider extends Provider {
  calls: Array<{ target: PushTarget; notification: Notification }>;
  /** Outcomes returned in order; the last one repeats. */
  outcomes: Outcome[];
}

export function scriptedProvider(outcomes: Outcome[] = [{ kind: 'delivered' }], options: { delayMs?: number } = {}): ScriptedProvider {
  const provider: ScriptedProvider = {
    calls: [],
    outcomes,
    validateToken: (token) => (token.includes(' ') ? 'token contains a space' : null),
    async send(target, notification) {
      provider.calls.push({ target, notification });
      if (options.delayMs) await new Promise((resolve) => setTimeout(resolve, options.delayMs));
      return provider.outcomes.length > 1 ? provider.outcomes.shift()! : provider.outcomes[0];
    },
    status: () => ({ state: 'ok' }),
    async close() {},
  };
  return provider;
}

export function directoryOf(providers: Record<string, Provider>, stateless: string[] = []): AppDirectory {
  return new AppDirectory(Object.entries(providers).map(([name, provider]) => ({ name, providerKind: 'scripted', provider, stateless: stateless.includes(name) })));
}
