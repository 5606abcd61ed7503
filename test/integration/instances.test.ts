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

const skip = ejabberdMissing() || postgresMissing();
const TOPIC = 'org.example.chat';
const PUSH = 'push.localhost';
const CLI = join(import.meta.dirname, '..', '..', 'bin', 'push-appserver');

async function eventually<T>(probe: () => T | undefined | Promise<T | undefined>, what: string, timeoutMs = 30_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

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
      const pushedBy = (app: TestAppServer) => app.countLog(/msg="pushed"|pushed app=ios/);
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
});
