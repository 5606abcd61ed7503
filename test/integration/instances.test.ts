/**
 * Several push-appserver instances: one real PostgreSQL shared by all, a real ejabberd as the
 * user's server, every instance connected as the SAME component JID (ejabberd_service accepts
 * several connections for one host and spreads stanzas over them), the APNS mock as the provider.
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import postgres from 'postgres';
import { startAppServer, type TestAppServer } from '../support/app-server.ts';
import { ejabberdMissing, startEjabberd, type EjabberdInstance } from '../support/ejabberd.ts';
import { createTestApnsKey, startMockApns, testDeviceToken, type MockApns } from '../support/mock-apns.ts';
import { freePort } from '../support/ports.ts';
import { postgresMissing, startPostgres, type PostgresInstance } from '../support/postgres.ts';
import { publishIq } from '../support/push-stack.ts';
import { testTempDir } from '../support/temp-dir.ts';
import { connectClient, iqErrorOf, type TestClient } from '../support/xmpp-client.ts';
import { eventually } from '../support/eventually.ts';

const skip = ejabberdMissing() || postgresMissing();
const TOPIC = 'org.example.chat';
const PUSH = 'push.localhost';
const CLI = join(import.meta.dirname, '..', '..', 'bin', 'push-appserver');

describe('several instances on one PostgreSQL, one component JID on ejabberd', { skip, timeout: 240_000 }, () => {
  const key = createTestApnsKey();
  let pg: PostgresInstance;
  let ejabberd: EjabberdInstance;
  let apns: MockApns;
  let bob: TestClient;
  let nextToken = 1;

  before(async () => {
    [pg, ejabberd, apns] = await Promise.all([
      startPostgres(),
      startEjabberd({ componentJid: PUSH }),
      startMockApns({ keys: [{ keyId: key.keyId, teamId: key.teamId, key: key.privateKey }], topics: [TOPIC] }),
    ]);
    await ejabberd.register('bob', 'localhost', 'bob-pw');
    bob = await connectClient({ port: ejabberd.c2sPort, domain: 'localhost', username: 'bob', password: 'bob-pw' });
  });

  after(async () => {
    await bob?.stop();
    await ejabberd?.stop();
    await pg?.stop();
    await apns?.close();
  });

  const apnsApp = () => ({ provider: 'apns', topic: TOPIC, endpoint: apns.origin, ca_file: apns.caFile, key_file: key.keyFile, key_id: key.keyId, team_id: key.teamId });

  function delivered(token: string): number {
    return apns.requests.filter((request) => request.token === token && request.status === 200).length;
  }

  test('publishes from mod_push spread over both instances and every one is delivered once, whichever instance registered the device', async () => {
    const url = pg.url(await pg.createDatabase('spread'));
    const config = { storage: { url }, apps: { ios: apnsApp() } };
    const one = await startAppServer(config, { prosody: ejabberd });
    let two: TestAppServer | undefined;
    try {
      two = await startAppServer(config, { prosody: ejabberd });
      await Promise.all([one.waitOnline(), two.waitOnline()]);
      const users = Array.from({ length: 8 }, (_, i) => `spread${i}`);
      const devices = await Promise.all(users.map(async (user, i) => {
        await ejabberd.register(user, 'localhost', `${user}-pw`);
        const token = testDeviceToken(nextToken++);
        // Half register through each instance: the registration is shared through the database.
        const via: TestAppServer = i % 2 === 0 ? one : two!;
        const reply = await via.post('/push_appserver/v1/register', { type: 'ios', node: `${user}-phone`, token });
        const [ok, node, secret] = reply.body.split('\n');
        assert.equal(ok, 'OK', reply.body);
        const client = await connectClient({ port: ejabberd.c2sPort, domain: 'localhost', username: user, password: `${user}-pw` });
        await client.enablePush(PUSH, node, secret);
        await client.stop();
        return { user, token, node };
      }));
      // Round by round: a publish arriving while one for its node is on the way rides along (one wake-up is enough).
      const rounds = 3;
      for (let round = 1; round <= rounds; round++) {
        for (const { user } of devices) await bob.sendMessage(`${user}@localhost`, `message ${round}`);
        await eventually(() => devices.every(({ token }) => delivered(token) >= round) || undefined, `round ${round} delivered to every device`);
      }
      assert.deepEqual(devices.map(({ token }) => delivered(token)), devices.map(() => rounds));
      const pushedBy = (app: TestAppServer) => app.countLog(/\] pushed .*app=ios/);
      assert.ok(pushedBy(one) > 0 && pushedBy(two) > 0, `both instances pushed (${pushedBy(one)} and ${pushedBy(two)})`);
      assert.equal(pushedBy(one) + pushedBy(two), devices.length * rounds);
      // The bookkeeping of both lands on the same rows.
      await one.server.store.list({ limit: 1 });
      await two.server.store.list({ limit: 1 });
      const counts = await Promise.all(devices.map(async ({ node }) => (await one.server.store.getByNode(node))?.pushCount));
      assert.deepEqual(counts, devices.map(() => rounds));
    } finally {
      await two?.stop();
      await one.stop();
    }
  });

  test('push.min_interval_ms holds across instances: publishes for one node answered by both inside the window make one push, then the merged one at the window\'s end', async () => {
    const url = pg.url(await pg.createDatabase('throttle'));
    const windowMs = 4000;
    const config = { storage: { url }, push: { min_interval_ms: windowMs }, apps: { ios: apnsApp() } };
    const one = await startAppServer(config, { prosody: ejabberd });
    let two: TestAppServer | undefined;
    try {
      two = await startAppServer(config, { prosody: ejabberd });
      await Promise.all([one.waitOnline(), two.waitOnline()]);
      const token = testDeviceToken(nextToken++);
      const reply = await one.post('/push_appserver/v1/register', { type: 'ios', node: 'throttled-phone', token });
      const [ok, node, secret] = reply.body.split('\n');
      assert.equal(ok, 'OK', reply.body);
      const answered = async (app: TestAppServer) => {
        const text = await app.server.metrics!.metrics();
        return [...text.matchAll(/^push_appserver_publishes_total\{[^}]*app="ios"[^}]*\} (\d+)/gm)].reduce((sum, m) => sum + Number(m[1]), 0);
      };
      const started = Date.now();
      assert.equal((await bob.iq(publishIq(node, secret))).attrs.type, 'result');
      // ejabberd spreads the publishes over both connections: go on until both instances answered some.
      for (let sent = 1; (await answered(one)) === 0 || (await answered(two)) === 0; sent++) {
        assert.ok(sent < 40, `ejabberd sent every publish to one instance (${await answered(one)} and ${await answered(two)})`);
        assert.equal((await bob.iq(publishIq(node, secret))).attrs.type, 'result');
      }
      const insideWindow = Date.now() - started < windowMs;
      assert.ok(insideWindow, 'the publishes took longer than the window: the test proves nothing');
      assert.equal(delivered(token), 1, 'one push inside the window, whichever instance answered');
      await eventually(() => delivered(token) === 2 || undefined, 'the merged push at the window\'s end');
      assert.ok(Date.now() - started >= windowMs - 50, 'the merged push waited for the window to end');
      const sql = postgres(url, { max: 1 });
      try {
        await eventually(async () => Number((await sql`SELECT count(*) AS n FROM pending_retries`)[0].n) === 0 || undefined, 'an empty retry queue');
      } finally {
        await sql.end();
      }
      assert.equal(delivered(token), 2, 'exactly one merged push');
    } finally {
      await two?.stop();
      await one.stop();
    }
  });

  /** An instance as operators run it: bin/push-appserver serve in its own process, so it can be killed. */
  async function spawnInstance(name: string, url: string): Promise<{ name: string; child: ChildProcess; httpUrl: string; log: () => string; waitFor: (pattern: RegExp) => Promise<void> }> {
    const port = await freePort();
    const dir = testTempDir(`push-appserver-${name}-`);
    const file = join(dir, 'push-appserver.toml');
    const app = apnsApp();
    writeFileSync(file, `
[xmpp]
component_jid = "${PUSH}"
server_host = "127.0.0.1"
server_port = ${ejabberd.componentPort}
component_secret = "${ejabberd.componentSecret}"
reconnect_initial_ms = 100
reconnect_max_ms = 1000
[http]
host = "127.0.0.1"
port = ${port}
[storage]
url = "${url}"
pool_size = 4
[push]
timeout_ms = 1000
retry_max_backoff_s = 1
[log]
level = "debug"
[registration]
http_per_ip_per_minute = 0
[apps.ios]
${Object.entries(app).map(([k, v]) => `${k} = ${JSON.stringify(v)}`).join('\n')}
`);
    const child = spawn(CLI, ['serve', '--config', file], { env: { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: dir }, stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    child.stdout!.on('data', (chunk) => { output += chunk; });
    child.stderr!.on('data', (chunk) => { output += chunk; });
    process.once('exit', () => child.kill('SIGKILL'));
    const waitFor = async (pattern: RegExp): Promise<void> => {
      await eventually(() => pattern.test(output) || undefined, `${name}: ${pattern}`).catch((error) => {
        throw new Error(`${(error as Error).message}\n${output.slice(-3000)}`);
      });
    };
    await waitFor(/component online/);
    return { name, child, httpUrl: `http://127.0.0.1:${port}`, log: () => output, waitFor };
  }

  test('kill -9 of one instance in a burst while APNS answers 503: every push answered result or wait is delivered exactly once by the survivor', async () => {
    const url = pg.url(await pg.createDatabase('crash'));
    const victim = await spawnInstance('victim', url);
    const survivor = await spawnInstance('survivor', url);
    try {
      const devices = await Promise.all(Array.from({ length: 40 }, async (_, i) => {
        const token = testDeviceToken(nextToken++);
        const response = await fetch(`${victim.httpUrl}/push_appserver/v1/register`, {
          method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' },
          body: new URLSearchParams({ type: 'ios', node: `crash-${i}`, token }).toString(),
        });
        const body = await response.text();
        const [ok, node, secret] = body.split('\n');
        assert.equal(ok, 'OK', body);
        return { token, node, secret, answer: undefined as string | undefined, detail: '' };
      }));
      apns.setDefaultBehaviour({ kind: 'server-error', status: 503 });
      // The burst: publishes as the user's server sends them, spread by ejabberd over both connections.
      const answers = devices.map(async (device, i) => {
        await new Promise((resolve) => setTimeout(resolve, i * 15));
        try {
          await bob.iq(publishIq(device.node, device.secret), 20_000);
          device.answer = 'result';
        } catch (error) {
          const details = iqErrorOf(error);
          device.answer = details.type ?? 'no answer';
          device.detail = `${details.type}/${details.condition}/${details.text}`;
        }
      });
      // Killed in the middle: once some publishes were answered, others not yet sent.
      await eventually(() => devices.filter((d) => d.answer !== undefined).length >= 10 || undefined, 'the first answers of the burst');
      victim.child.kill('SIGKILL');
      await Promise.all(answers);
      const owed = devices.filter((d) => d.answer === 'result' || d.answer === 'wait');
      assert.ok(owed.length >= 30, `most publishes were answered (${devices.map((d) => d.answer).join(',')})`);

      apns.setDefaultBehaviour({ kind: 'ok' });
      await eventually(() => owed.every((d) => delivered(d.token) >= 1) || undefined, 'a delivery for every push answered result or wait', 60_000).catch((error) => {
        const missing = owed.filter((d) => delivered(d.token) === 0).map((d) => `${d.node} (${d.detail || d.answer})`);
        throw new Error(`${(error as Error).message}: not delivered ${missing.join(', ')}\nsurvivor:\n${survivor.log().slice(-3000)}`);
      });
      // Nothing is owed any more once the queue is empty: a late duplicate would have to come from it.
      const sql = postgres(url, { max: 1 });
      try {
        await eventually(async () => Number((await sql`SELECT count(*) AS n FROM pending_retries`)[0].n) === 0 || undefined, 'an empty retry queue', 60_000);
      } finally {
        await sql.end();
      }
      await survivor.waitFor(/retried push/);
      assert.deepEqual(owed.filter((d) => delivered(d.token) !== 1).map((d) => [d.node, delivered(d.token)]), []);
      for (const device of devices) assert.ok(delivered(device.token) <= 1, `${device.node} delivered at most once`);
      // The pushes the killed instance had accepted were sent by the survivor.
      const acceptedByVictim = new Set([...victim.log().matchAll(/\] push will be retried .*?node=(crash-\d+)\b/g)].map((m) => m[1]));
      const pushedBySurvivor = new Set([...survivor.log().matchAll(/\] pushed .*?node=(crash-\d+)\b/g)].map((m) => m[1]));
      assert.ok(acceptedByVictim.size > 0);
      assert.deepEqual([...acceptedByVictim].filter((node) => !pushedBySurvivor.has(node)), []);
    } finally {
      apns.setDefaultBehaviour({ kind: 'ok' });
      victim.child.kill('SIGKILL');
      survivor.child.kill('SIGTERM');
      if (survivor.child.exitCode === null) await new Promise((resolve) => survivor.child.once('exit', resolve));
    }
  });
});
