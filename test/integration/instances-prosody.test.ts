/**
 * Several instances with Prosody, which allows one connection per component JID: each instance
 * takes a JID of its own (push1.localhost, push2.localhost) over one PostgreSQL, and a registration
 * made through one is served by the other. Real Prosody (mod_cloud_notify), real PostgreSQL.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { startAppServer, type TestAppServer } from '../support/app-server.ts';
import { postgresMissing, startPostgres, type PostgresInstance } from '../support/postgres.ts';
import { prosodyMissing, startProsody, type ProsodyInstance } from '../support/prosody.ts';
import { connectClient, type TestClient } from '../support/xmpp-client.ts';

const skip = prosodyMissing() || postgresMissing();
const SECRET = 'test-component-secret';

describe('two instances with Prosody: one component JID each, one PostgreSQL', { skip, timeout: 120_000 }, () => {
  let pg: PostgresInstance;
  let prosody: ProsodyInstance;
  let push1: TestAppServer;
  let push2: TestAppServer;
  let bob: TestClient;

  before(async () => {
    pg = await startPostgres();
    prosody = await startProsody({
      componentJid: 'push1.localhost',
      componentSecret: SECRET,
      extraGlobalConfig: `Component "push2.localhost"\n  component_secret = "${SECRET}"\n`,
    });
    for (const user of ['bob', 'alice', 'carol']) await prosody.register(user, 'localhost', `${user}-pw`);
    const storage = { url: pg.url(await pg.createDatabase('prosody_instances')) };
    push1 = await startAppServer({ storage }, { prosody });
    push2 = await startAppServer({ storage }, { prosody: { ...prosody, componentJid: 'push2.localhost' } });
    await Promise.all([push1.waitOnline(), push2.waitOnline()]);
    bob = await connectClient({ port: prosody.c2sPort, domain: 'localhost', username: 'bob', password: 'bob-pw' });
  });

  after(async () => {
    await bob?.stop();
    await push2?.stop();
    await push1?.stop();
    await prosody?.stop();
    await pg?.stop();
  });

  async function enable(user: string, jid: string, node: string, secret: string): Promise<void> {
    const client = await connectClient({ port: prosody.c2sPort, domain: 'localhost', username: user, password: `${user}-pw` });
    await client.enablePush(jid, node, secret);
    await client.stop();
  }

  test('a registration made through push1 is served through push2, and each instance pushes what its JID receives', async () => {
    const registered = async (node: string) => {
      const reply = await push1.post('/push_appserver/v1/register', { type: 'apns', node, token: node.padEnd(64, '0') });
      const [ok, pubsubNode, secret] = reply.body.split('\n');
      assert.equal(ok, 'OK', reply.body);
      return { node: pubsubNode, secret };
    };
    const a = await registered('alice-device');
    const c = await registered('carol-device');
    await enable('alice', 'push1.localhost', a.node, a.secret);
    await enable('carol', 'push2.localhost', c.node, c.secret);
    await bob.sendMessage('alice@localhost', 'for alice');
    await bob.sendMessage('carol@localhost', 'for carol');
    await push1.waitForLog(new RegExp(`dry-run push .*node=${a.node}\\b`));
    await push2.waitForLog(new RegExp(`dry-run push .*node=${c.node}\\b`));
    assert.equal(push2.countLog(new RegExp(`dry-run push .*node=${a.node}\\b`)), 0);
    assert.equal(push1.countLog(new RegExp(`dry-run push .*node=${c.node}\\b`)), 0);
  });
});
