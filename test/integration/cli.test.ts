/**
 * The command line exactly as operators run it: `bin/push-appserver serve|check-config|registrations|
 * help` in a child process (the same script `npm start` reaches), with real files and signals. The
 * child gets a clean environment: the developer's own PUSH_APPSERVER_* variables never leak in.
 */
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { startAppServer } from '../support/app-server.ts';
import { closedPort, type ClosedPort } from '../support/ports.ts';
import { testTempDir } from '../support/temp-dir.ts';

const CLI = join(import.meta.dirname, '..', '..', 'bin', 'push-appserver');

function writeConfig(text: string): string {
  const dir = testTempDir('push-appserver-cli-');
  const file = join(dir, 'push-appserver.toml');
  writeFileSync(file, text);
  return file;
}

/** The test runner's environment without any PUSH_APPSERVER_* override, plus `extra`. */
function childEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const env = Object.fromEntries(Object.entries(process.env).filter(([name]) => !name.startsWith('PUSH_APPSERVER_')));
  return { ...env, ...extra };
}

function cli(args: string[], env: Record<string, string> = {}) {
  return spawnSync(CLI, args, { encoding: 'utf8', env: childEnv(env), timeout: 30_000 });
}

const escapeRegExp = (text: string) => text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

interface ServeProcess {
  child: ChildProcessWithoutNullStreams;
  stderr(): string;
  /** The HTTP origin, read back from the log line of the server that bound port 0. */
  httpUrl: string;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

/** `serve` on HTTP port 0 (the port is read back from its log), XMPP pointed at a port held closed. */
async function serve(xmppPort: number, extraConfig = ''): Promise<ServeProcess> {
  const dir = testTempDir('push-appserver-serve-');
  const file = writeConfig(`[http]\nport = 0\n[storage]\nurl = "sqlite:${join(dir, 'push.db')}"\n[xmpp]\nserver_port = ${xmppPort}\n${extraConfig}\n[apps.apns]\nprovider = "log"\n`);
  const child = spawn(CLI, ['serve', '--config', file], { stdio: ['pipe', 'ignore', 'pipe'], env: childEnv() }) as unknown as ChildProcessWithoutNullStreams;
  let stderr = '';
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
  const httpUrl = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`serve did not log its HTTP address:\n${stderr}`)), 30_000);
    child.stderr.on('data', (chunk) => {
      stderr += String(chunk);
      const match = /HTTP API listening url=(http:\/\/[^/\s]+)\//.exec(stderr);
      if (match) {
        clearTimeout(timer);
        resolve(match[1]);
      }
    });
    void exited.then(({ code }) => {
      clearTimeout(timer);
      reject(new Error(`serve exited with ${code} before listening:\n${stderr}`));
    });
  });
  return { child, stderr: () => stderr, httpUrl, exited };
}

describe('command line', () => {
  let xmppClosed: ClosedPort;

  before(async () => {
    xmppClosed = await closedPort();
  });

  after(async () => {
    await xmppClosed?.release();
  });

  test('check-config prints the effective config with secrets masked', () => {
    const file = writeConfig('[xmpp]\ncomponent_secret = "hunter2"\n[http]\nadmin_token = "tok-123-of-the-redaction-test-0123456789"\n[apps.apns]\nprovider = "log"\n');
    const result = cli(['check-config', '--config', file]);
    assert.equal(result.status, 0, result.stderr);
    assert.match(result.stdout, /component_secret = "\*+"/);
    assert.match(result.stdout, /port = 5280/);
    assert.doesNotMatch(result.stdout, /hunter2|tok-123/);
  });

  test('check-config on a bad config names the file and the key and exits with status 2', () => {
    const file = writeConfig('[http]\nport = -1\n[apps.apns]\nprovider = "log"\n');
    const result = cli(['check-config', '--config', file]);
    assert.equal(result.status, 2, result.stderr);
    assert.match(result.stderr, new RegExp(`^push-appserver: configuration error: ${escapeRegExp(file)}: http\\.port: must be at least 0`));
    assert.doesNotMatch(result.stderr, /at .*\.ts:\d+/, 'no stack trace');
  });

  test('a missing config file is a one-line error', () => {
    const result = cli(['serve', '--config', '/nonexistent/push.toml']);
    assert.equal(result.status, 2);
    assert.match(result.stderr, /\/nonexistent\/push\.toml: \(file\): cannot read the configuration: file not found/);
  });

  test('environment variables override the file in check-config', () => {
    const file = writeConfig('[apps.apns]\nprovider = "log"\n');
    const result = cli(['check-config', '--config', file], { PUSH_APPSERVER_HTTP__PORT: '6001' });
    assert.equal(result.status, 0, result.stderr);
    assert.match(result.stdout, /port = 6001/);
  });

  test('help and --help print the usage with every command and exit 0', () => {
    for (const args of [['help'], ['--help']]) {
      const result = cli(args);
      assert.equal(result.status, 0, result.stderr);
      for (const command of ['serve', 'check-config', 'registrations list', 'registrations show NODE', 'registrations remove NODE', 'vapid-keys', 'help']) {
        assert.match(result.stdout, new RegExp(`push-appserver ${escapeRegExp(command)}`), `${args.join(' ')} names ${command}`);
      }
    }
  });

  test('an unknown command prints the usage and exits with status 2', () => {
    const result = cli(['frobnicate']);
    assert.equal(result.status, 2);
    assert.match(result.stderr, /unknown command "frobnicate"/);
    assert.match(result.stderr, /Usage:/);
  });

  test('serve answers health over HTTP, warns about the built-in component secret, and stops cleanly on SIGTERM', async () => {
    const server = await serve(xmppClosed.port);
    try {
      const response = await fetch(`${server.httpUrl}/push_appserver/v1/health`);
      assert.equal(response.status, 200);
      assert.equal(await response.text(), 'RUNNING');
      assert.match(server.stderr(), /WARN .*xmpp\.component_secret is the built-in default/);
    } finally {
      server.child.kill('SIGTERM');
    }
    assert.deepEqual(await server.exited, { code: 0, signal: null }, server.stderr());
    assert.match(server.stderr(), /shutting down signal=SIGTERM/);
    assert.match(server.stderr(), /stopped/);
  });

  test('SIGINT stops serve gracefully like SIGTERM, and a configured secret gets no warning', async () => {
    const server = await serve(xmppClosed.port, 'component_secret = "an-operator-secret"');
    server.child.kill('SIGINT');
    assert.deepEqual(await server.exited, { code: 0, signal: null }, server.stderr());
    assert.match(server.stderr(), /shutting down signal=SIGINT/);
    assert.match(server.stderr(), /INFO .*stopped/);
    assert.doesNotMatch(server.stderr(), /built-in default/);
  });
});

describe('registrations list, show and remove', () => {
  let configFile: string;
  const nodes: string[] = [];

  before(async () => {
    const dir = testTempDir('push-appserver-registrations-');
    const url = `sqlite:${join(dir, 'push.db')}`;
    configFile = writeConfig(`[storage]\nurl = "${url}"\n[apps.apns]\nprovider = "log"\n[apps.fcm]\nprovider = "log"\n`);
    // Registrations made the way devices make them: over the HTTP API of a running server.
    const app = await startAppServer({ storage: { url } });
    try {
      for (const [type, node, token] of [['apns', 'iphone-1', 'a'.repeat(64)], ['fcm', 'android-1', 'fcm-token-1']]) {
        const reply = await app.post('/push_appserver/v1/register', { type, node, token });
        assert.equal(reply.status, 200, reply.body);
        nodes.push(reply.body.split('\n')[1]);
      }
    } finally {
      await app.stop();
    }
  });

  test('list prints one line per registration: node, app, renewed, push count', () => {
    const result = cli(['registrations', 'list', '--config', configFile]);
    assert.equal(result.status, 0, result.stderr);
    const lines = result.stdout.trim().split('\n').map((line) => line.split('\t')).sort((a, b) => a[0].localeCompare(b[0]));
    assert.equal(lines.length, 2);
    assert.deepEqual(lines.map(([node, app, , count]) => [node, app, count]), [['android-1', 'fcm', '0'], ['iphone-1', 'apns', '0']]);
    for (const [, , renewed] of lines) assert.match(renewed, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
  });

  test('show prints one registration as JSON with the secret masked', () => {
    const result = cli(['registrations', 'show', 'iphone-1', '--config', configFile]);
    assert.equal(result.status, 0, result.stderr);
    const shown = JSON.parse(result.stdout) as Record<string, unknown>;
    assert.equal(shown.node, 'iphone-1');
    assert.equal(shown.app, 'apns');
    assert.equal(shown.token, 'a'.repeat(64));
    assert.equal(shown.secret, '********');
    assert.match(result.stdout, /"secret": "\*+"/);
  });

  test('show and remove of an unknown node say so and exit with status 1', () => {
    for (const action of ['show', 'remove']) {
      const result = cli(['registrations', action, 'no-such-node', '--config', configFile]);
      assert.equal(result.status, 1, `${action}: ${result.stderr}`);
      assert.match(result.stderr, /no registration with node no-such-node/);
    }
  });

  test('remove deletes the registration: it is gone from show and list', () => {
    const removed = cli(['registrations', 'remove', 'android-1', '--config', configFile]);
    assert.equal(removed.status, 0, removed.stderr);
    assert.equal(removed.stdout, 'removed android-1\n');
    assert.equal(cli(['registrations', 'show', 'android-1', '--config', configFile]).status, 1);
    const listed = cli(['registrations', 'list', '--config', configFile]);
    assert.deepEqual(listed.stdout.trim().split('\n').map((line) => line.split('\t')[0]), ['iphone-1']);
  });

  test('registrations without a known action prints the usage and exits with status 2', () => {
    for (const args of [['registrations'], ['registrations', 'show'], ['registrations', 'purge']]) {
      const result = cli([...args, '--config', configFile]);
      assert.equal(result.status, 2, args.join(' '));
      assert.match(result.stderr, /Usage:/);
    }
  });
});

test('the example configuration shipped in config/ passes check-config', () => {
  const example = join(import.meta.dirname, '..', '..', 'config', 'push-appserver.example.toml');
  const result = cli(['check-config', '--config', example]);
  assert.equal(result.status, 0, result.stderr);
});
