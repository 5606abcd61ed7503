/**
 * The registered-node resolver: XEP-0357 publishes and HTTP /push to a node we store. The
 * publisher proves itself with the registration's secret; a registration made over XMPP is bound
 * to the user's domain and accepts publishes only from there (DESIGN §5).
 *
 * An unknown node is not answered here: the next resolver (the stateless dialect) may know it,
 * and the dispatcher answers not-found when none does. A wrong secret gets the same not-found as
 * an unknown node, so nodes cannot be probed.
 */
import type { Logger } from '../../log.ts';
import type { Outcome } from '../../providers/types.ts';
import type { Store } from '../../store/types.ts';
import type { AppDirectory } from '../apps.ts';
import { domainOf, type DispatchResult, type PushRequest } from '../dispatcher.ts';
import type { Resolution, ResolvedTarget, Resolver } from '../pipeline.ts';
import { registrationOrigin } from '../registrations.ts';
import { secretsEqual } from '../secrets.ts';
import { urgencyOf } from '../summary.ts';
import { noTelemetry, type Telemetry } from '../telemetry.ts';

export class RegisteredNodes implements Resolver {
  private readonly store: Store;
  private readonly apps: AppDirectory;
  private readonly logger: Logger;
  private readonly now: () => number;
  private readonly telemetry: Telemetry;

  constructor(store: Store, apps: AppDirectory, logger: Logger, now: () => number = Date.now, telemetry: Telemetry = noTelemetry) {
    this.store = store;
    this.apps = apps;
    this.logger = logger;
    this.now = now;
    this.telemetry = telemetry;
  }

  async resolve(request: PushRequest): Promise<Resolution | undefined> {
    if (request.dialect !== 'xep0357' && request.dialect !== 'http') return undefined;
    const dialect = request.dialect;
    const registration = await this.store.getByNode(request.node);
    if (!registration) return undefined;
    const answer = (result: DispatchResult): Resolution => ({ kind: 'answer', dialect, app: registration.app, result });
    if (request.secret === null || !secretsEqual(registration.secret, request.secret)) return answer({ kind: 'not-found' });
    const publisherDomain = request.from === null ? null : domainOf(request.from);
    if (registration.boundDomain !== null && publisherDomain !== registration.boundDomain) {
      return answer({ kind: 'forbidden', reason: `this node accepts publishes only from ${registration.boundDomain}` });
    }
    const app = this.apps.get(registration.app);
    if (!app) {
      this.logger.error('registration names an app that is not configured', { node: registration.node, app: registration.app });
      return answer({ kind: 'temporary', reason: `app "${registration.app}" is not configured` });
    }
    const target: ResolvedTarget = {
      app,
      key: registration.node,
      node: registration.node,
      token: registration.token,
      registration,
      notification: { summary: request.summary, urgency: urgencyOf(request.summary) },
      publisherDomain,
    };
    return { kind: 'target', dialect, target };
  }

  async tokenDead(target: ResolvedTarget, outcome: Extract<Outcome, { kind: 'token-dead' }>): Promise<DispatchResult> {
    const removed = await this.store.removeIfNotRenewedSince(target.node, outcome.since ?? this.now());
    if (removed && target.registration) this.telemetry.registrationChanged(target.app.name, registrationOrigin(target.registration), 'token_dead');
    this.logger.info(removed ? 'token is dead, registration removed' : 'token reported dead, but the device re-registered since', { app: target.app.name, node: target.node, reason: outcome.reason });
    return removed ? { kind: 'not-found' } : { kind: 'temporary', reason: outcome.reason };
  }
}
