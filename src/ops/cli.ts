/**
 * The operators' commands `send-test NODE` and `stats` (issue #12), on the configuration and store
 * the server runs with. They work beside a running server (SQLite in WAL mode allows it) and print
 * plain lines to stdout; the exit status of send-test says whether the push was delivered.
 */
import { createApps } from '../app.ts';
import type { Config } from '../config/schema.ts';
import { createLogger } from '../log.ts';
import { openStore } from '../store/open.ts';
import { describeAnswer, sendTestPush } from './test-push.ts';

interface Output {
  out(line: string): void;
  err(line: string): void;
}

const stdio: Output = {
  out: (line) => process.stdout.write(`${line}\n`),
  err: (line) => process.stderr.write(`${line}\n`),
};

/** 0 when the provider delivered the push, 1 otherwise (not found, not delivered). */
export async function sendTestCommand(config: Config, node: string, io: Output = stdio): Promise<number> {
  const logger = createLogger({ level: 'warn', format: config.log.format });
  const store = await openStore(config.storage.url, logger.child('store'));
  try {
    const registration = await store.getByNode(node);
    if (!registration) {
      io.err(`push-appserver: no registration with node ${node}`);
      return 1;
    }
    const apps = createApps(config, logger);
    try {
      const app = apps.get(registration.app);
      if (!app) {
        io.err(`push-appserver: the registration names app "${registration.app}", which is not configured`);
        return 1;
      }
      const result = await sendTestPush(app, registration, { timeoutMs: config.push.timeoutMs, store });
      io.out(`${app.name} (${app.providerKind}): ${describeAnswer(result)}`);
      if (result.removed) io.out(`registration ${node} removed: its token is dead`);
      return result.outcome.kind === 'delivered' ? 0 : 1;
    } finally {
      await apps.close();
    }
  } finally {
    await store.close();
  }
}

export async function statsCommand(config: Config, io: Output = stdio): Promise<number> {
  const store = await openStore(config.storage.url);
  try {
    const counts = await store.countByApp();
    const names = [...new Set([...config.apps.keys(), ...counts.keys()])].sort();
    const width = Math.max(...names.map((name) => name.length), 3);
    io.out('registrations per app:');
    for (const name of names) {
      const configured = config.apps.get(name);
      const note = configured ? configured.provider : 'not configured';
      io.out(`  ${name.padEnd(width)}  ${String(counts.get(name) ?? 0).padStart(8)}  (${note})`);
    }
    io.out(`  ${'all'.padEnd(width)}  ${String([...counts.values()].reduce((a, b) => a + b, 0)).padStart(8)}`);
    io.out(`retries pending: ${await store.countRetries()}`);
    const failed = await store.search({ failedOnly: true, offset: 0, limit: 10 });
    io.out(`last errors (${failed.total} registrations whose last push failed):`);
    if (failed.registrations.length === 0) io.out('  none');
    for (const r of failed.registrations) {
      io.out(`  ${new Date(r.lastErrorAt ?? 0).toISOString()}  ${r.app}  ${r.node}  ${r.lastError ?? ''}`);
    }
    return 0;
  } finally {
    await store.close();
  }
}
