/**
 * The app server as operators run it, `bin/push-appserver serve` in a child process, for tests that
 * must kill it (kill -9) or signal it (SIGTERM) and start it again on the same database.
 */
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { testTempDir } from './temp-dir.ts';

const CLI = join(import.meta.dirname, '..', '..', 'bin', 'push-appserver');

export interface ServeProcess {
  child: ChildProcessWithoutNullStreams;
  stderr(): string;
  /** The HTTP origin, read back from the log line of the server that bound port 0. */
  httpUrl: string;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** Resolves when a log line (from the start) matches. */
  waitForLog(pattern: RegExp, timeoutMs?: number): Promise<void>;
  post(path: string, fields: Record<string, string>): Promise<{ status: number; body: string }>;
}

/** The test runner's environment without any PUSH_APPSERVER_* override. */
function childEnv(): NodeJS.ProcessEnv {
  return Object.fromEntries(Object.entries(process.env).filter(([name]) => !name.startsWith('PUSH_APPSERVER_')));
}

/** Writes `configText` to a file and starts `serve` with it (give `[http] port = 0`). */
export async function serveProcess(configText: string): Promise<ServeProcess> {
  const file = join(testTempDir('push-appserver-serve-'), 'push-appserver.toml');
  writeFileSync(file, configText);
  const child = spawn(CLI, ['serve', '--config', file], { stdio: ['pipe', 'ignore', 'pipe'], env: childEnv() }) as unknown as ChildProcessWithoutNullStreams;
  let stderr = '';
  const listeners = new Set<() => void>();
  child.stderr.on('data', (chunk) => {
    stderr += String(chunk);
    for (const listener of listeners) listener();
  });
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
  const waitFor = (pattern: RegExp, timeoutMs = 30_000) => new Promise<RegExpExecArray>((resolve, reject) => {
    const check = () => {
      const match = pattern.exec(stderr);
      if (!match) return;
      listeners.delete(check);
      clearTimeout(timer);
      resolve(match);
    };
    const timer = setTimeout(() => {
      listeners.delete(check);
      reject(new Error(`serve did not log ${pattern} within ${timeoutMs} ms:\n${stderr.slice(-3000)}`));
    }, timeoutMs);
    listeners.add(check);
    check();
  });
  const listening = await Promise.race([
    waitFor(/HTTP API listening url=(http:\/\/[^/\s]+)\//),
    exited.then(({ code }) => { throw new Error(`serve exited with ${code} before listening:\n${stderr}`); }),
  ]);
  const httpUrl = listening[1];
  return {
    child,
    stderr: () => stderr,
    httpUrl,
    exited,
    async waitForLog(pattern, timeoutMs) {
      await waitFor(pattern, timeoutMs);
    },
    async post(path, fields) {
      const response = await fetch(`${httpUrl}${path}`, {
        method: 'POST',
        headers: { 'content-type': 'application/x-www-form-urlencoded' },
        body: new URLSearchParams(fields).toString(),
      });
      return { status: response.status, body: await response.text() };
    },
  };
}
