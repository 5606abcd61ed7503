/**
 * Starts the real PushAppServer in-process for integration tests, with the configuration an operator
 * would write (TOML), pointed at a test Prosody, HTTP on a free port and SQLite in a temp dir.
 * Log lines are captured so tests can see what the `log` provider would have pushed.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { once } from 'node:events';
import { PushAppServer } from '../../src/app.ts';
import { parseDocument } from '../../src/config/load.ts';
import { isTable, type Table } from '../../src/config/reader.ts';
import { readConfig } from '../../src/config/schema.ts';
import { createLogger } from '../../src/log.ts';
import { closedPort } from './ports.ts';
import type { ProsodyInstance } from './prosody.ts';

export interface TestAppServer {
  server: PushAppServer;
  httpUrl: string;
  dir: string;
  logLines: string[];
  /** Resolves with the first captured log line (from now on or already seen) matching. */
  waitForLog(pattern: RegExp, timeoutMs?: number, from?: number): Promise<string>;
  countLog(pattern: RegExp): number;
  /** Resolves once at least `count` captured lines match. */
  waitForCount(pattern: RegExp, count: number, timeoutMs?: number): Promise<void>;
  waitOnline(timeoutMs?: number): Promise<void>;
  post(path: string, fields: Record<string, string>): Promise<{ status: number; body: string; headers: Headers }>;
  stop(): Promise<void>;
}

function merge(target: Table, source: Table): Table {
  for (const [key, value] of Object.entries(source)) {
    if (isTable(value) && isTable(target[key])) merge(target[key] as Table, value);
    else target[key] = value;
  }
  return target;
}

/** The user's server the component attaches to: a test Prosody, or anything with a component listener (ejabberd). */
export type ComponentHost = Pick<ProsodyInstance, 'componentJid' | 'componentPort' | 'componentSecret'>;

export async function startAppServer(config: string | Table = {}, options: { prosody?: ComponentHost } = {}): Promise<TestAppServer> {
  const dir = mkdtempSync(join(tmpdir(), 'push-appserver-test-'));
  const document = typeof config === 'string' ? parseDocument(config, 'test.toml') : structuredClone(config);
  // Without a Prosody the component has no server: a port held closed, never one someone may own.
  const noServer = options.prosody ? undefined : await closedPort();
  const defaults: Table = {
    xmpp: {
      component_jid: options.prosody?.componentJid ?? 'push.localhost',
      server_host: '127.0.0.1',
      server_port: options.prosody?.componentPort ?? noServer!.port,
      component_secret: options.prosody?.componentSecret ?? 'unused',
      reconnect_initial_ms: 100,
      reconnect_max_ms: 1000,
    },
    http: { host: '127.0.0.1', port: 0 },
    storage: { url: `sqlite:${join(dir, 'push.db')}` },
    // Tests register far faster than any client; the tests of these limits set them themselves.
    registration: { http_per_ip_per_minute: 100_000, adhoc_per_jid_per_minute: 100_000, adhoc_per_domain_per_minute: 100_000 },
  };
  if (!document.apps) document.apps = { apns: { provider: 'log' }, fcm: { provider: 'log' } };
  const merged = merge(defaults, document);
  const logLines: string[] = [];
  const waiters = new Set<() => void>();
  const logger = createLogger({
    level: 'debug',
    sink: {
      write(line) {
        logLines.push(line);
        if (process.env.TEST_LOG === '1') process.stderr.write(line);
        for (const wake of waiters) wake();
      },
    },
  });
  let server: PushAppServer;
  try {
    server = await PushAppServer.start(readConfig(merged, 'test.toml'), logger);
  } catch (error) {
    await noServer?.release();
    throw error;
  }
  const httpUrl = `http://127.0.0.1:${server.httpAddress?.port}`;

  const waitForLog = (pattern: RegExp, timeoutMs = 15_000, from = 0) =>
    new Promise<string>((resolve, reject) => {
      const check = () => {
        const line = logLines.slice(from).find((candidate) => pattern.test(candidate));
        if (line === undefined) return false;
        waiters.delete(wake);
        clearTimeout(timer);
        resolve(line);
        return true;
      };
      const wake = () => void check();
      const timer = setTimeout(() => {
        waiters.delete(wake);
        reject(new Error(`no log line matching ${pattern} within ${timeoutMs} ms; last lines:\n${logLines.slice(-15).join('')}`));
      }, timeoutMs);
      if (!check()) waiters.add(wake);
    });

  return {
    server,
    httpUrl,
    dir,
    logLines,
    waitForLog,
    countLog: (pattern) => logLines.filter((line) => pattern.test(line)).length,
    async waitForCount(pattern, count, timeoutMs = 15_000) {
      let from = 0;
      for (let seen = 0; seen < count; seen++) {
        await waitForLog(pattern, timeoutMs, from);
        from = logLines.findIndex((line, index) => index >= from && pattern.test(line)) + 1;
      }
    },
    async waitOnline(timeoutMs = 15_000) {
      const component = server.xmpp.component;
      if (component.state === 'online') return;
      await Promise.race([
        once(component, 'online'),
        new Promise((_, reject) => setTimeout(() => reject(new Error(`component not online within ${timeoutMs} ms (state ${component.state}, ${component.lastError})`)), timeoutMs).unref()),
      ]);
    },
    async post(path, fields) {
      const response = await fetch(`${httpUrl}${path}`, {
        method: 'POST',
        headers: { 'content-type': 'application/x-www-form-urlencoded' },
        body: new URLSearchParams(fields).toString(),
      });
      return { status: response.status, body: await response.text(), headers: response.headers };
    },
    async stop() {
      await server.stop();
      await noServer?.release();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
