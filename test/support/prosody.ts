/**
 * A real Prosody (Debian's prosody + prosody-modules) for integration tests: started in the
 * foreground as a child process, config, data, pid file and log in a temp dir, on free loopback
 * ports. One per test file: it takes about a second to start.
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync, mkdirSync } from 'node:fs';
import { createConnection } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { freePort, listenerIsProcess } from './ports.ts';
import { integrationSkipped, missingPart } from './real-parts.ts';

const run = promisify(execFile);

export interface ProsodyOptions {
  /** VirtualHosts; each gets mod_cloud_notify. */
  hosts?: string[];
  componentJid?: string;
  componentSecret?: string;
  /** Lua lines added to every VirtualHost (e.g. push_notification_with_body = true). */
  extraHostConfig?: string;
  /** Lua lines added to the global section. */
  extraGlobalConfig?: string;
  /** Modules enabled on every VirtualHost besides cloud_notify (e.g. "push2"). */
  extraHostModules?: string[];
  /** Extra environment of the Prosody process (e.g. LUA_PATH_5_4 for the mod_push2 shims). */
  env?: Record<string, string>;
  /** More XEP-0114 components besides componentJid, JID → secret (the bench's load generator is one). */
  extraComponents?: Record<string, string>;
  /** The log file's lowest level (default debug; the bench uses warn, so logging is not what it measures). */
  logLevel?: 'debug' | 'info' | 'warn';
}

export interface ProsodyInstance {
  dir: string;
  hosts: string[];
  componentJid: string;
  componentSecret: string;
  c2sPort: number;
  componentPort: number;
  register(user: string, host: string, password: string): Promise<void>;
  /** Stops and starts again on the same ports (the component's reconnect is tested with this). */
  /** Stops and starts again on the same ports; `whileDown` runs in between (to observe the outage). */
  restart(whileDown?: () => Promise<void>): Promise<void>;
  stop(): Promise<void>;
  logText(): string;
}

export function prosodyAvailable(): boolean {
  return existsSync('/usr/bin/prosody') && existsSync('/usr/lib/prosody/modules/mod_cloud_notify');
}

const INSTALL_PROSODY = 'apt-get install prosody prosody-modules (Debian; .ci/run installs them)';

/**
 * For `describe(..., { skip: prosodyMissing() })`. Despite the name (kept for existing callers) a
 * missing Prosody is never a skip: the tests run and `startProsody` fails saying how to install it.
 * Only the explicit PUSH_APPSERVER_TEST_SKIP_INTEGRATION=1 skips, loudly (see real-parts.ts).
 */
export function prosodyMissing(): string | false {
  return integrationSkipped('a real Prosody');
}

const BIND_FAILURE = /Failed to open server port/;
const START_ATTEMPTS = 5;

type Launch = { ok: true } | { ok: false; retryable: boolean; reason: string };

function isListening(port: number): Promise<boolean> {
  return new Promise<boolean>((resolve) => {
    const socket = createConnection({ host: '127.0.0.1', port }, () => {
      socket.destroy();
      resolve(true);
    });
    socket.on('error', () => resolve(false));
  });
}

/**
 * Waits until `child` itself listens on every port. A port someone else took between `freePort()`
 * and Prosody's bind shows as Prosody's "Failed to open server port" log line (or, on Linux, as a
 * listener that is not the child): that is a retry on other ports, not a started Prosody.
 */
async function waitForListeners(ports: number[], child: ChildProcess, logFile: string, timeoutMs = 15_000): Promise<Launch> {
  const deadline = Date.now() + timeoutMs;
  // Only this start's lines: the log file is kept across restarts.
  const logFrom = existsSync(logFile) ? statSync(logFile).size : 0;
  const logText = () => (existsSync(logFile) ? readFileSync(logFile).subarray(logFrom).toString('utf8') : '');
  while (Date.now() < deadline) {
    if (BIND_FAILURE.test(logText())) return { ok: false, retryable: true, reason: 'a port was taken by someone else' };
    if (child.exitCode !== null || child.signalCode !== null) return { ok: false, retryable: false, reason: `Prosody exited (code ${child.exitCode}, signal ${child.signalCode})` };
    let ready = true;
    for (const port of ports) {
      const ours = child.pid === undefined ? undefined : listenerIsProcess(port, child.pid);
      if (ours === false || (ours === undefined && !(await isListening(port)))) {
        ready = false;
        break;
      }
    }
    if (ready && !BIND_FAILURE.test(logText())) return { ok: true };
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  return { ok: false, retryable: false, reason: `Prosody did not listen on ${ports.join(', ')} within ${timeoutMs} ms` };
}

export async function startProsody(options: ProsodyOptions = {}): Promise<ProsodyInstance> {
  if (!prosodyAvailable()) throw missingPart('Prosody with mod_cloud_notify', INSTALL_PROSODY);
  const dir = mkdtempSync(join(tmpdir(), 'push-appserver-prosody-'));
  mkdirSync(join(dir, 'data'));
  mkdirSync(join(dir, 'certs'));
  const hosts = options.hosts ?? ['localhost'];
  const componentJid = options.componentJid ?? 'push.localhost';
  const componentSecret = options.componentSecret ?? 'test-component-secret';
  const configFile = join(dir, 'prosody.cfg.lua');
  const logFile = join(dir, 'prosody.log');
  const lua = (value: string) => JSON.stringify(value);

  const writeConfig = (c2sPort: number, componentPort: number) => writeFileSync(configFile, `-- generated by test/support/prosody.ts
run_as_root = true
certificates = ${lua(join(dir, 'certs'))}
pidfile = ${lua(join(dir, 'prosody.pid'))}
data_path = ${lua(join(dir, 'data'))}
log = { { levels = { min = ${lua(options.logLevel ?? 'debug')} }, to = "file", filename = ${lua(logFile)} } }
modules_enabled = { "roster", "saslauth", "disco", "offline", "ping", "posix" }
modules_disabled = { "s2s", "tls", "http" }
c2s_ports = { ${c2sPort} }
c2s_interfaces = { "127.0.0.1" }
component_ports = { ${componentPort} }
component_interfaces = { "127.0.0.1" }
c2s_require_encryption = false
s2s_require_encryption = false
allow_unencrypted_plain_auth = true
authentication = "internal_plain"
storage = "internal"
${options.extraGlobalConfig ?? ''}
${hosts.map((host) => `VirtualHost ${lua(host)}
  modules_enabled = { ${['cloud_notify', ...(options.extraHostModules ?? [])].map(lua).join(', ')} }
${options.extraHostConfig ?? ''}
`).join('\n')}
Component ${lua(componentJid)}
  component_secret = ${lua(componentSecret)}
${Object.entries(options.extraComponents ?? {}).map(([jid, secret]) => `Component ${lua(jid)}
  component_secret = ${lua(secret)}
`).join('')}`);

  let child: ChildProcess | undefined;
  /** One start of Prosody on the configured ports; stops it again when it did not come up. */
  const launch = async (ports: number[]): Promise<Launch> => {
    const started = spawn('prosody', ['-F', '--config', configFile], { stdio: ['ignore', 'ignore', 'pipe'], env: { ...process.env, ...options.env } });
    let stderr = '';
    started.stderr?.on('data', (chunk) => { stderr += String(chunk); });
    started.on('error', (error) => { stderr += `${error.message}\n`; });
    child = started;
    const result = await waitForListeners(ports, started, logFile);
    if (!result.ok) {
      await halt();
      const log = existsSync(logFile) ? readFileSync(logFile, 'utf8').split('\n').slice(-30).join('\n') : '(no log)';
      return { ...result, reason: `${result.reason}:\n${log}\n${stderr}` };
    }
    return result;
  };
  const halt = async () => {
    const running = child;
    child = undefined;
    if (!running || running.exitCode !== null || running.signalCode !== null) return;
    const exited = new Promise((resolve) => running.once('exit', resolve));
    running.kill('SIGTERM');
    const timer = setTimeout(() => running.kill('SIGKILL'), 5000);
    await exited;
    clearTimeout(timer);
  };

  let c2sPort = 0;
  let componentPort = 0;
  let failure = '';
  for (let attempt = 1; attempt <= START_ATTEMPTS; attempt++) {
    c2sPort = await freePort();
    do componentPort = await freePort(); while (componentPort === c2sPort);
    writeConfig(c2sPort, componentPort);
    const result = await launch([c2sPort, componentPort]);
    if (result.ok) {
      failure = '';
      break;
    }
    failure = result.reason;
    if (!result.retryable) break;
  }
  if (failure) {
    if (process.env.KEEP_PROSODY_DIR !== '1') rmSync(dir, { recursive: true, force: true });
    throw new Error(`Prosody did not start: ${failure}`);
  }

  return {
    dir,
    hosts,
    componentJid,
    componentSecret,
    c2sPort,
    componentPort,
    async register(user, host, password) {
      await run('prosodyctl', ['--config', configFile, 'register', user, host, password], { env: { ...process.env, ...options.env } });
    },
    async restart(whileDown) {
      await halt();
      await whileDown?.();
      // Same ports, so the app server finds it again; they were ours a moment ago, so a bind
      // failure here is someone taking them in between: say so rather than retry elsewhere.
      const result = await launch([c2sPort, componentPort]);
      if (!result.ok) throw new Error(`Prosody did not start again on ${c2sPort}/${componentPort}: ${result.reason}`);
    },
    async stop() {
      await halt();
      if (process.env.KEEP_PROSODY_DIR !== '1') rmSync(dir, { recursive: true, force: true });
    },
    logText: () => (existsSync(logFile) ? readFileSync(logFile, 'utf8') : ''),
  };
}
