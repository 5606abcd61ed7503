/**
 * Issue #11 with the server as operators run it (a child process): kill -9 with retries pending and
 * a restart on the same database delivers every pending push, none twice within the throttle
 * window; SIGTERM answers pushes on their way, keeps them and exits 0; a second process holding
 * the database's write lock degrades health but loses nothing, and the server recovers by itself.
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import { after, afterEach, before, describe, test } from 'node:test';
import { xml } from '@xmpp/client';
import { createTestApnsKey, startMockApns, testDeviceToken, type MockApns } from '../support/mock-apns.ts';
import { prosodyMissing, startProsody, type ProsodyInstance } from '../support/prosody.ts';
import { publishIq } from '../support/push-stack.ts';
import { serveProcess, type ServeProcess } from '../support/serve-process.ts';
import { testTempDir } from '../support/temp-dir.ts';
import { connectClient, iqErrorOf, type TestClient } from '../support/xmpp-client.ts';
import { eventually } from '../support/eventually.ts';

const skip = prosodyMissing();
const TOPIC = 'org.example.chat';
const THROTTLE_MS = 3000;
// A retry being sent holds a lease of 2 × timeout_ms + 5 s (dispatcher.runDueRetries). One the kill
// interrupts is taken back at the next start (its holder is gone), long before the lease would end.
const PROVIDER_TIMEOUT_MS = 2000;
const LEASE_MS = 2 * PROVIDER_TIMEOUT_MS + 5000;
const COMMANDS = 'http://jabber.org/protocol/commands';

function registerCommand(fields: Record<string, string>) {
  return xml('iq', { type: 'set', to: 'push.localhost' }, xml('command', { xmlns: COMMANDS, node: 'v1-register-push', action: 'execute' },
    xml('x', { xmlns: 'jabber:x:data', type: 'submit' }, ...Object.entries(fields).map(([name, value]) => xml('field', { var: name }, xml('value', {}, value))))));
}

describe('crash safety of the server process', { skip, timeout: 300_000 }, () => {
  const key = createTestApnsKey();
  let apns: MockApns;
  let prosody: ProsodyInstance;
  let bob: TestClient;
  let nextToken = 9000;
  const running = new Set<ServeProcess>();

  function configFor(dbFile: string): string {
    return `[xmpp]
component_jid = "${prosody.componentJid}"
server_port = ${prosody.componentPort}
component_secret = "${prosody.componentSecret}"
reconnect_initial_ms = 100
reconnect_max_ms = 500
[http]
port = 0
[storage]
url = "sqlite:${dbFile}"
[registration]
http_per_ip_per_minute = 100000
[push]
retry_max_backoff_s = 1
min_interval_ms = ${THROTTLE_MS}
timeout_ms = ${PROVIDER_TIMEOUT_MS}
shutdown_timeout_ms = 1000
[apps.ios]
provider = "apns"
topic = "${TOPIC}"
endpoint = "${apns.origin}"
ca_file = "${apns.caFile}"
key_file = "${key.keyFile}"
key_id = "${key.keyId}"
team_id = "${key.teamId}"
`;
  }

  async function serve(dbFile: string): Promise<ServeProcess> {
    const server = await serveProcess(configFor(dbFile));
    running.add(server);
    void server.exited.then(() => running.delete(server));
    await server.waitForLog(/component online/);
    return server;
  }

  async function register(server: ServeProcess, device: string) {
    const token = testDeviceToken(nextToken++);
    const reply = await server.post('/push_appserver/v1/register', { type: 'ios', node: device, token });
    assert.equal(reply.status, 200, reply.body);
    const [, node, secret] = reply.body.split('\n');
    return { node, secret, token };
  }

  async function publish(node: string, secret: string): Promise<string> {
    try {
      await bob.iq(publishIq(node, secret), 20_000);
      return 'result';
    } catch (error) {
      return iqErrorOf(error).type ?? String(error);
    }
  }

  function pendingRetries(dbFile: string): number {
    const db = new DatabaseSync(dbFile, { readOnly: true });
    try {
      return (db.prepare('SELECT count(*) AS n FROM pending_retries').get() as { n: number }).n;
    } finally {
      db.close();
    }
  }

  const requestsTo = (token: string) => apns.requests.filter((request) => request.token === token && request.status !== 0);

  before(async () => {
    apns = await startMockApns({
      keys: [{ keyId: key.keyId, teamId: key.teamId, key: key.privateKey }],
      topics: [TOPIC],
    });
    prosody = await startProsody();
    await prosody.register('bob', 'localhost', 'bob-pw');
    bob = await connectClient({ port: prosody.c2sPort, domain: 'localhost', username: 'bob', password: 'bob-pw' });
  });

  // A test that fails with its server still up must not leave the component connected for the next.
  afterEach(async () => {
    const left = [...running];
    for (const server of left) server.child.kill('SIGKILL');
    await Promise.all(left.map((server) => server.exited));
  });

  after(async () => {
    for (const server of running) server.child.kill('SIGKILL');
    await bob?.stop();
    await prosody?.stop();
    await apns?.close();
  });

  test('kill -9 with retries pending, restart on the same database: every pending push is delivered, none twice within the throttle window', async () => {
    const dbFile = join(testTempDir('push-crash-'), 'push.db');
    const first = await serve(dbFile);
    const devices: Array<Awaited<ReturnType<typeof register>>> = [];
    for (let i = 0; i < 3; i++) devices.push(await register(first, `crash-${i}`));
    for (const device of devices) apns.setBehaviour(device.token, { kind: 'server-error', status: 503 });
    for (const device of devices) assert.equal(await publish(device.node, device.secret), 'wait');
    // Each has been retried at least once: its retry row is in the database.
    for (const device of devices) await eventually(() => (requestsTo(device.token).length >= 2 ? true : undefined), `a retry to ${device.node}`);
    first.child.kill('SIGKILL');
    assert.equal((await first.exited).signal, 'SIGKILL');
    assert.equal(pendingRetries(dbFile), 3);

    for (const device of devices) apns.setBehaviour(device.token, { kind: 'ok' });
    const seen = devices.map((device) => requestsTo(device.token).length);
    const second = await serve(dbFile);
    await eventually(() => (pendingRetries(dbFile) === 0 ? true : undefined), 'the pending retries to be sent');
    devices.forEach((device, i) => {
      const after = requestsTo(device.token).slice(seen[i]);
      assert.equal(after.filter((request) => request.status === 200).length, 1, `${device.node} got its push once`);
    });
    second.child.kill('SIGTERM');
    assert.equal((await second.exited).code, 0);
  });

  test('kill -9 while a retry is on its way: the next start takes its lease back from the killed process and sends it at once, once', async () => {
    const dbFile = join(testTempDir('push-crash-lease-'), 'push.db');
    const first = await serve(dbFile);
    const device = await register(first, 'crash-lease');
    // The publish fails, its retry hangs at the provider: the kill comes while the retry is leased.
    apns.setBehaviour(device.token, [{ kind: 'server-error', status: 503 }, { kind: 'slow', delayMs: 60_000 }, { kind: 'ok' }]);
    assert.equal(await publish(device.node, device.secret), 'wait');
    await eventually(() => (apns.requests.filter((request) => request.token === device.token).length >= 2 ? true : undefined), 'the retry to be on its way');
    first.child.kill('SIGKILL');
    await first.exited;
    assert.equal(pendingRetries(dbFile), 1, 'the leased retry is still in the database');

    const second = await serve(dbFile);
    const onlineAt = performance.now();
    await eventually(() => (pendingRetries(dbFile) === 0 ? true : undefined), 'the leased retry to be sent', LEASE_MS + 20_000);
    const delivered = requestsTo(device.token).filter((request) => request.status === 200);
    assert.equal(delivered.length, 1, 'delivered once');
    // The killed process's lease would have held it for LEASE_MS from just before the kill.
    assert.ok(performance.now() - onlineAt < LEASE_MS / 2, `sent ${Math.round(performance.now() - onlineAt)} ms after the restart`);
    assert.match(second.stderr(), /retries leased by a process that is gone are due again.*retries=1/);
    second.child.kill('SIGTERM');
    assert.equal((await second.exited).code, 0);
  });

  test('SIGTERM answers a push on its way with wait, keeps it as a retry, exits 0; the next start delivers it', async () => {
    const dbFile = join(testTempDir('push-sigterm-'), 'push.db');
    const first = await serve(dbFile);
    const device = await register(first, 'sigterm-0');
    apns.setBehaviour(device.token, [{ kind: 'slow', delayMs: 20_000 }, { kind: 'ok' }]);
    const answer = publish(device.node, device.secret);
    await eventually(() => (apns.requests.some((request) => request.token === device.token) ? true : undefined), 'the push to be on its way');
    first.child.kill('SIGTERM');
    assert.equal(await answer, 'wait');
    assert.equal((await first.exited).code, 0);
    assert.equal(pendingRetries(dbFile), 1);
    const second = await serve(dbFile);
    await eventually(() => (requestsTo(device.token).some((request) => request.status === 200) ? true : undefined), 'the kept push to be delivered');
    await eventually(() => (pendingRetries(dbFile) === 0 ? true : undefined), 'the retry to leave the queue');
    second.child.kill('SIGTERM');
    assert.equal((await second.exited).code, 0);
  });

  test('a second process holding the write lock: publishes are answered, health says degraded, and it recovers by itself with nothing lost', async () => {
    const dbFile = join(testTempDir('push-locked-'), 'push.db');
    const server = await serve(dbFile);
    const devices: Array<Awaited<ReturnType<typeof register>>> = [];
    for (let i = 0; i < 5; i++) devices.push(await register(server, `locked-${i}`));
    const health = async () => (await (await fetch(`${server.httpUrl}/push_appserver/v1/health`, { headers: { accept: 'application/json' } })).json()) as { status: string; store: { state: string; error?: string } };
    const locker = new DatabaseSync(dbFile);
    locker.exec('BEGIN IMMEDIATE');
    try {
      for (const device of devices) assert.equal(await publish(device.node, device.secret), 'result');
      const degraded = await eventually(async () => { const report = await health(); return report.store.state === 'degraded' ? report : undefined; }, 'health to show the store degraded');
      assert.match(degraded.store.error ?? '', /locked|busy/i);
      await server.waitForLog(/the database refused a bookkeeping write(?=.*sqlite=.*(locked|busy))/i);
      // Registration writes cannot wait for the lock: a clear temporary answer, never a 500.
      const form = async (path: string, fields: Record<string, string>) => {
        const response = await fetch(`${server.httpUrl}/push_appserver/v1/${path}`, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: new URLSearchParams(fields).toString() });
        return { status: response.status, retryAfter: response.headers.get('retry-after'), body: await response.text() };
      };
      const attempts = [
        ['a new registration', 'register', { type: 'ios', node: 'locked-new', token: testDeviceToken(nextToken++) }],
        ['a renewal', 'register', { type: 'ios', node: 'locked-0', token: devices[0].token }],
        ['a removal', 'unregister', { type: 'ios', node: 'locked-1' }],
      ] as const;
      for (const [what, path, fields] of attempts) {
        const reply = await form(path, fields);
        assert.equal(reply.status, 503, `${what}: ${reply.status} ${reply.body}`);
        assert.ok(Number(reply.retryAfter) >= 1, `${what}: Retry-After ${reply.retryAfter}`);
        assert.match(reply.body, /^ERROR\n.*try again/s, what);
      }
      const adHoc = await bob.iq(registerCommand({ type: 'ios', node: 'locked-adhoc', token: testDeviceToken(nextToken++) }), 20_000).then(() => undefined, (error) => iqErrorOf(error));
      assert.deepEqual([adHoc?.type, adHoc?.condition], ['wait', 'internal-server-error']);
      assert.equal(server.child.exitCode, null, 'the server is still running');
    } finally {
      locker.exec('COMMIT');
      locker.close();
    }
    await eventually(async () => ((await health()).store.state === 'ok' ? true : undefined), 'the store to recover');
    const db = new DatabaseSync(dbFile, { readOnly: true });
    const rows = db.prepare('SELECT node, push_count FROM registrations').all() as Array<{ node: string; push_count: number }>;
    db.close();
    assert.equal(rows.length, 5);
    for (const row of rows) assert.equal(row.push_count, 1, `the delivery to ${row.node} was written after all`);
    server.child.kill('SIGTERM');
    assert.equal((await server.exited).code, 0);
  });
});
