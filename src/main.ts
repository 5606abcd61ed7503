/**
 * The command line: serve, check-config, registrations, help. Operators see a sentence, never a stack
 * trace, for anything they can fix themselves (config, ports, files).
 */
import { parseArgs } from 'node:util';
import { stringify as toToml } from 'smol-toml';
import { parseAppSettings, PushAppServer } from './app.ts';
import { loadConfig } from './config/load.ts';
import { ConfigError } from './config/reader.ts';
import { pushDocument, type Config } from './config/schema.ts';
import { createLogger } from './log.ts';
import { copyRegistrations } from './store/copy.ts';
import { openStore } from './store/open.ts';
import { generateVapidKeys } from './providers/web-push-crypto.ts';
import { sendTestCommand, statsCommand } from './ops/cli.ts';

const USAGE = `push-appserver: an XMPP push app server (XEP-0357) attached as an XEP-0114 component

Usage:
  push-appserver serve [--config FILE]            run the server
  push-appserver check-config [--config FILE]     validate and print the effective config (secrets masked)
  push-appserver registrations list [--config FILE]
  push-appserver registrations show NODE [--config FILE]
  push-appserver registrations remove NODE [--config FILE]
  push-appserver send-test NODE [--config FILE]   send a test push to one registration; print the provider's answer
                                                  (exit status 0 only when delivered)
  push-appserver stats [--config FILE]            registrations per app, retries pending, the last errors
  push-appserver migrate [--config FILE]          bring the storage schema up to date and exit
  push-appserver copy-store --from URL --to URL   copy every registration between stores (sqlite: ⇄ postgres://)
  push-appserver vapid-keys                       print a fresh WebPush VAPID key pair (TOML lines for a webpush app)
  push-appserver help

Without --config, config/push-appserver.toml is used when it exists, else the built-in defaults.
Environment variables PUSH_APPSERVER_<SECTION>__<KEY> override single keys.
`;

const SECRET_KEY = /(secret|password|passphrase|token|private_key)/i;

function mask(value: unknown, key: string): unknown {
  if (typeof value === 'string' && SECRET_KEY.test(key) && !/(_file|_id)$/.test(key)) return value === '' ? '' : '********';
  if (typeof value === 'object' && value !== null && !Array.isArray(value)) {
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, mask(v, k)]));
  }
  return value;
}

/** The effective configuration as TOML keys, defaults included. */
export function effectiveDocument(config: Config): Record<string, unknown> {
  const apps: Record<string, unknown> = {};
  for (const app of config.apps.values()) apps[app.name] = { ...app.settings.table, provider: app.provider, stateless: app.stateless, ...(app.push2Stateless ? { push2_stateless: true } : {}) };
  const document: Record<string, unknown> = {
    xmpp: {
      component_jid: config.xmpp.componentJid,
      server_host: config.xmpp.serverHost,
      server_port: config.xmpp.serverPort,
      component_secret: config.xmpp.componentSecret,
      reconnect_initial_ms: config.xmpp.reconnectInitialMs,
      reconnect_max_ms: config.xmpp.reconnectMaxMs,
      auth_failure_retry_ms: config.xmpp.authFailureRetryMs,
      max_stanza_bytes: config.xmpp.maxStanzaBytes,
    },
    http: {
      enabled: config.http.enabled,
      host: config.http.host,
      port: config.http.port,
      debug: config.http.debug,
      ...(config.http.adminToken !== undefined ? { admin_token: config.http.adminToken } : {}),
      max_body_bytes: config.http.maxBodyBytes,
    },
    storage: { url: config.storage.url.replace(/\/\/([^:@/]*):[^@]*@/, '//$1:********@'), pool_size: config.storage.poolSize },
    push: pushDocument(config.push),
    push2: { audiences: config.push2.audiences, clock_skew_s: config.push2.clockSkewS },
    log: { level: config.log.level, format: config.log.format },
    metrics: { enabled: config.metrics.enabled, ...(config.metrics.token !== undefined ? { token: config.metrics.token } : {}) },
    apps,
  };
  if (Object.keys(config.dialects.table).length > 0) document.dialects = config.dialects.table;
  return mask(document, '') as Record<string, unknown>;
}

async function serve(configPath: string | undefined): Promise<number> {
  const { config, environmentKeys } = loadConfig(configPath);
  const logger = createLogger({ level: config.log.level, format: config.log.format });
  if (environmentKeys.length > 0) logger.info('configuration overridden from the environment', { keys: environmentKeys.join(',') });
  // Handlers first: a signal while starting (systemd stopping a fresh unit) must stop gracefully too.
  let stopRequested: (() => void) | undefined;
  let signals = 0;
  const onSignal = (signal: string) => {
    signals += 1;
    if (signals > 1) {
      logger.warn('second signal: exiting now', { signal });
      process.exit(1);
    }
    logger.info('shutting down', { signal });
    stopRequested?.();
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  const server = await PushAppServer.start(config, logger);
  await new Promise<void>((resolve) => {
    stopRequested = () => {
      server.stop().then(resolve, (error) => {
        logger.error('error while stopping', { error });
        resolve();
      });
    };
    if (signals > 0) stopRequested();
  });
  return 0;
}

function checkConfig(configPath: string | undefined): number {
  const { config } = loadConfig(configPath);
  parseAppSettings(config);
  process.stdout.write(`# effective configuration from ${config.source} (secrets masked)\n`);
  process.stdout.write(toToml(effectiveDocument(config)) + '\n');
  process.stderr.write('configuration OK\n');
  return 0;
}

async function registrations(args: string[], configPath: string | undefined): Promise<number> {
  const [action, node] = args;
  const { config } = loadConfig(configPath);
  const store = await openStore(config.storage.url);
  try {
    if (action === 'list') {
      let after: string | undefined;
      for (;;) {
        const page = await store.list({ after, limit: 1000 });
        for (const r of page) process.stdout.write(`${r.node}\t${r.app}\t${new Date(r.renewedAt).toISOString()}\t${r.pushCount}\n`);
        if (page.length < 1000) break;
        after = page[page.length - 1].node;
      }
      return 0;
    }
    if ((action === 'show' || action === 'remove') && node) {
      const registration = await store.getByNode(node);
      if (!registration) {
        process.stderr.write(`push-appserver: no registration with node ${node}\n`);
        return 1;
      }
      if (action === 'remove') {
        await store.remove(node);
        process.stdout.write(`removed ${node}\n`);
      } else {
        process.stdout.write(JSON.stringify({ ...registration, secret: '********' }, null, 2) + '\n');
      }
      return 0;
    }
    process.stderr.write(USAGE);
    return 2;
  } finally {
    await store.close();
  }
}

async function migrate(configPath: string | undefined): Promise<number> {
  const { config } = loadConfig(configPath);
  const store = await openStore(config.storage.url, undefined, { poolSize: 1 });
  try {
    // SQLite migrates at open without a record of what it applied; PostgreSQL reports it.
    const applied = 'appliedAtOpen' in store ? (store as { appliedAtOpen: number[] }).appliedAtOpen : [];
    const what = applied.length > 0 ? `applied migration${applied.length > 1 ? 's' : ''} ${applied.join(', ')}` : 'nothing to apply';
    process.stdout.write(`${store.kind} schema is up to date (${what})\n`);
    return 0;
  } finally {
    await store.close();
  }
}

async function copyStoreCommand(from: string | undefined, to: string | undefined): Promise<number> {
  if (!from || !to) {
    process.stderr.write(`push-appserver: copy-store needs --from URL and --to URL\n\n${USAGE}`);
    return 2;
  }
  if (from === to) {
    process.stderr.write('push-appserver: copy-store: --from and --to name the same store\n');
    return 2;
  }
  const source = await openStore(from, undefined, { poolSize: 2 });
  try {
    const target = await openStore(to, undefined, { poolSize: 8 });
    try {
      const report = await copyRegistrations(source, target);
      process.stdout.write(`copied ${report.copied} registration(s), ${report.present} already there, ${report.conflicts.length} conflict(s), ${report.updated} updated\n`);
      for (const conflict of report.conflicts.slice(0, 20)) process.stderr.write(`push-appserver: not copied: ${conflict}\n`);
      return report.conflicts.length > 0 ? 1 : 0;
    } finally {
      await target.close();
    }
  } finally {
    await source.close();
  }
}

export async function main(argv: string[]): Promise<number> {
  let parsed;
  try {
    parsed = parseArgs({
      args: argv,
      allowPositionals: true,
      options: { config: { type: 'string', short: 'c' }, help: { type: 'boolean', short: 'h' }, from: { type: 'string' }, to: { type: 'string' } },
    });
  } catch (error) {
    process.stderr.write(`push-appserver: ${(error as Error).message}\n\n${USAGE}`);
    return 2;
  }
  const [command = 'serve', ...rest] = parsed.positionals;
  const configPath = parsed.values.config;
  if (parsed.values.help || command === 'help') {
    process.stdout.write(USAGE);
    return 0;
  }
  try {
    switch (command) {
      case 'serve':
        return await serve(configPath);
      case 'check-config':
        return checkConfig(configPath);
      case 'registrations':
        return await registrations(rest, configPath);
      case 'send-test': {
        if (rest.length !== 1) {
          process.stderr.write(`push-appserver: send-test needs exactly one NODE\n\n${USAGE}`);
          return 2;
        }
        return await sendTestCommand(loadConfig(configPath).config, rest[0]);
      }
      case 'stats':
        return await statsCommand(loadConfig(configPath).config);
      case 'migrate':
        return await migrate(configPath);
      case 'copy-store':
        return await copyStoreCommand(parsed.values.from, parsed.values.to);
      case 'vapid-keys': {
        const keys = generateVapidKeys();
        process.stdout.write(`vapid_public_key = "${keys.publicKey}"\nvapid_private_key = "${keys.privateKey}"\n`);
        return 0;
      }
      default:
        process.stderr.write(`push-appserver: unknown command "${command}"\n\n${USAGE}`);
        return 2;
    }
  } catch (error) {
    if (error instanceof ConfigError) {
      process.stderr.write(`push-appserver: configuration error: ${error.message}\n`);
      return 2;
    }
    process.stderr.write(`push-appserver: ${(error as Error).message}\n`);
    return 1;
  }
}

if (import.meta.main) {
  process.exitCode = await main(process.argv.slice(2));
}
