/**
 * The configured apps and their live providers, as the core sees them: by name, nothing more.
 */
import type { Provider } from '../providers/types.ts';

export interface App {
  name: string;
  /** The provider kind (`apns`, `fcm`, `log` …), for logs and health. */
  providerKind: string;
  provider: Provider;
  stateless: boolean;
  /** Push 2.0 stateless delivery (snikket-apns compatible), opted in with `push2_stateless = true`. */
  push2Stateless?: boolean;
  /** The APNS topic (bundle id), which a stateless Push 2.0 `<client>` names in its fragment. */
  apnsTopic?: string;
  /** `allowed_domains`: the only publishing domains accepted for this app; undefined = any. */
  allowedDomains?: readonly string[];
  /** The app sends the message body (`include_body = true`): only then may a retry persist it. */
  includeBody?: boolean;
  /** The app's `ttl` in seconds: a push older than this is not retried. */
  ttlSeconds?: number;
}

export class AppDirectory {
  private readonly apps: Map<string, App>;

  constructor(apps: Iterable<App>) {
    this.apps = new Map([...apps].map((app) => [app.name, app]));
  }

  get(name: string): App | undefined {
    return this.apps.get(name);
  }

  names(): string[] {
    return [...this.apps.keys()];
  }

  all(): App[] {
    return [...this.apps.values()];
  }

  async close(): Promise<void> {
    await Promise.allSettled(this.all().map((app) => app.provider.close()));
  }
}
