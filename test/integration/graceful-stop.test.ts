/**
 * Graceful stop as README "Command line" promises it, with `bin/push-appserver serve` as a child
 * process attached to a real Prosody and pushing to the mock APNS: SIGTERM and SIGINT answer the
 * publishes already being pushed before the process exits 0; a second signal exits at once.
 * The mock holds each push ("slow"), so the signal surely arrives while it is on its way.
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { createTestApnsKey, startMockApns, testDeviceToken, type MockApns } from '../support/mock-apns.ts';
import { prosodyMissing, startProsody, type ProsodyInstance } from '../support/prosody.ts';
import { publishIq } from '../support/push-stack.ts';
import { testTempDir } from '../support/temp-dir.ts';
import { connectClient, type TestClient } from '../support/xmpp-client.ts';

const skip = prosodyMissing();
const CLI = join(import.meta.dirname, '..', '..', 'bin', 'push-appserver');
const TOPIC = 'org.example.chat';

interface Serve {
  child: ChildProcessWithoutNullStreams;
  stderr(): string;
  httpUrl: string;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** Resolves once stderr matches. */
  waitFor(pattern: RegExp, timeoutMs?: number): Promise<void>;
}

async function poll(condition: () => boolean, what: string, timeoutMs = 15_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

describe('graceful stop of serve', { skip, timeout: 120_000 }, () => {
  const key = createTestApnsKey();
  let prosody: ProsodyInstance;
  let apns: MockApns;
  let bob: TestClient;
  let nextToken = 900;

  before(async () => {
    apns = await startMockApns({ keys: [{ keyId: key.keyId, teamId: key.teamId, key: key.privateKey }], topics: [TOPIC] });
    prosody = await startProsody();
    await prosody.register('bob', 'localhost', 'bob-pw');
    bob = await connectClient({ port: prosody.c2sPort, domain: 'localhost', username: 'bob', password: 'bob-pw' });
  });

  after(async () => {
    await bob?.stop();
    await prosody?.stop();
    await apns?.close();
  });

  async function serve(): Promise<Serve> {
    const dir = testTempDir('push-appserver-stop-');
    const file = join(dir, 'push-appserver.toml');
    writeFileSync(file, `
[xmpp]
component_jid = ${JSON.stringify(prosody.componentJid)}
server_host = "127.0.0.1"
server_port = ${prosody.componentPort}
component_secret = ${JSON.stringify(prosody.componentSecret)}
[http]
port = 0
[push]
# Longer than any hold below: the stop waits for the push instead of keeping it as a retry.
shutdown_timeout_ms = 60000
[storage]
url = "sqlite:${join(dir, 'push.db')}"
[apps.ios]
provider = "apns"
topic = "${TOPIC}"
endpoint = ${JSON.stringify(apns.origin)}
ca_file = ${JSON.stringify(apns.caFile)}
key_file = ${JSON.stringify(key.keyFile)}
key_id = "${key.keyId}"
team_id = "${key.teamId}"
`);
    const env = Object.fromEntries(Object.entries(process.env).filter(([name]) => !name.startsWith('PUSH_APPSERVER_')));
    const child = spawn(CLI, ['serve', '--config', file], { stdio: ['pipe', 'ignore', 'pipe'], env }) as unknown as ChildProcessWithoutNullStreams;
    let stderr = '';
    child.stderr.on('data', (chunk) => { stderr += String(chunk); });
    const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
    let gone = false;
    void exited.then(() => { gone = true; });
    const waitFor = (pattern: RegExp, timeoutMs = 15_000) => poll(() => {
      if (gone && !pattern.test(stderr)) throw new Error(`serve exited before logging ${pattern}:\n${stderr}`);
      return pattern.test(stderr);
    }, `${pattern} in serve's log:\n${stderr}`, timeoutMs);
    await waitFor(/component online/);
    const httpUrl = /HTTP API listening url=(http:\/\/[^/\s]+)\//.exec(stderr)![1];
    return { child, stderr: () => stderr, httpUrl, exited, waitFor };
  }

  /** A registered device whose pushes the mock APNS holds for `holdMs` before answering 200. */
  async function heldDevice(server: Serve, holdMs: number) {
    const token = testDeviceToken(nextToken++);
    apns.setBehaviour(token, { kind: 'slow', delayMs: holdMs });
    const response = await fetch(`${server.httpUrl}/push_appserver/v1/register`, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ type: 'ios', node: `phone-${token.slice(0, 8)}`, token }).toString(),
    });
    const [ok, node, secret] = (await response.text()).split('\n');
    assert.equal(ok, 'OK');
    return { token, node, secret };
  }

  const held = (token: string) => apns.requests.some((request) => request.token === token && request.reason === 'slow');

  for (const signal of ['SIGTERM', 'SIGINT'] as const) {
    test(`${signal} answers the publish already being pushed, then exits 0`, async () => {
      const server = await serve();
      try {
        const device = await heldDevice(server, 1500);
        const answer = bob.iq(publishIq(device.node, device.secret, { to: prosody.componentJid }), 30_000);
        await poll(() => held(device.token), 'the push to reach the mock APNS');
        server.child.kill(signal);
        const reply = await answer;
        assert.equal(reply.attrs.type, 'result', 'the publish on its way got its answer');
        assert.equal(apns.requests.find((request) => request.token === device.token)?.status, 200);
        assert.deepEqual(await server.exited, { code: 0, signal: null }, server.stderr());
        const log = server.stderr();
        assert.match(log, new RegExp(`shutting down signal=${signal}`));
        assert.match(log, /INFO .*\] stopped/);
      } finally {
        server.child.kill('SIGKILL');
      }
    });
  }

  test('a second signal exits at once, without waiting for the push on its way', async () => {
    const server = await serve();
    try {
      const device = await heldDevice(server, 30_000);
      // Sent without waiting for its answer: there will be none from this process.
      const publish = publishIq(device.node, device.secret, { to: prosody.componentJid });
      publish.attrs.id = 'publish-before-second-signal';
      await bob.raw.send(publish);
      await poll(() => held(device.token), 'the push to reach the mock APNS');
      server.child.kill('SIGTERM');
      await server.waitFor(/shutting down signal=SIGTERM/);
      server.child.kill('SIGTERM');
      assert.deepEqual(await server.exited, { code: 1, signal: null }, server.stderr());
      assert.match(server.stderr(), /WARN .*second signal: exiting now signal=SIGTERM/);
      assert.doesNotMatch(server.stderr(), /INFO .*\] stopped/);
      assert.equal(apns.requests.find((request) => request.token === device.token)?.status, 0, 'the push was still on its way when the process exited');
    } finally {
      server.child.kill('SIGKILL');
    }
  });
});
