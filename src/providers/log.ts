/**
 * The dry-run provider: logs what would be pushed and reports it delivered. Useful to attach a new
 * deployment to an XMPP server before any push credentials exist, and as the default for `npm start`.
 */
import type { Provider, ProviderFactory } from './types.ts';

export interface LogProviderConfig {
  /** Log each push at info (true) or debug (false) level. */
  verbose: boolean;
}

const MAX_TOKEN_LENGTH = 4096;

export const logProvider: ProviderFactory<LogProviderConfig> = {
  parseConfig(settings) {
    const config = { verbose: settings.boolean('verbose', true) };
    settings.rejectUnknownKeys();
    return config;
  },

  create(config, { logger }): Provider {
    let sent = 0;
    return {
      validateToken(token) {
        if (token.length > MAX_TOKEN_LENGTH) return `token longer than ${MAX_TOKEN_LENGTH} characters`;
        return /[\x00-\x1f\x7f]/.test(token) ? 'token contains control characters' : null;
      },
      async send(target, notification) {
        sent += 1;
        const log = config.verbose ? logger.info : logger.debug;
        log('dry-run push', {
          node: target.node,
          token: target.token.length > 16 ? `${target.token.slice(0, 8)}…${target.token.slice(-4)}` : target.token,
          urgency: notification.urgency,
          count: notification.summary.messageCount,
        });
        return { kind: 'delivered', id: `log-${sent}` };
      },
      status: () => ({ state: 'ok' }),
      async close() {},
    };
  },
};
