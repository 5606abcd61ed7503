/**
 * The app on PostgreSQL through a database outage: while the database is away publishes are
 * answered `wait` (the user's server keeps push enabled) and /health says degraded; when it is back
 * the same process serves again, without a restart. Real Prosody, real PostgreSQL.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { postgresMissing, startPostgres, type PostgresInstance } from '../support/postgres.ts';
import { prosodyMissing } from '../support/prosody.ts';
import { publishIq, startPushStack, type PushStack } from '../support/push-stack.ts';
import { rejectionOf } from '../support/xmpp-client.ts';

const skip = prosodyMissing() || postgresMissing();

async function health(stack: PushStack): Promise<{ status: string; store: { state: string; error?: string } }> {
  const response = await fetch(`${stack.app.httpUrl}/push_appserver/v1/health`, { headers: { accept: 'application/json' } });
  return await response.json() as { status: string; store: { state: string; error?: string } };
}

async function eventually(probe: () => Promise<boolean>, what: string, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await probe())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

describe('the app on PostgreSQL when the database goes away', { skip, timeout: 120_000 }, () => {
  let pg: PostgresInstance;
  let stack: PushStack;

  before(async () => {
    pg = await startPostgres();
    stack = await startPushStack({ storage: { url: pg.url(await pg.createDatabase('outage')) } });
  });

  after(async () => {
    await stack?.stop();
    await pg?.stop();
  });

  test('publishes get wait and health is degraded while the database is down; the same process serves again when it is back', async () => {
    const reply = await stack.app.post('/push_appserver/v1/register', { type: 'apns', node: 'outage-device', token: 'f'.repeat(64) });
    const [ok, node, secret] = reply.body.split('\n');
    assert.equal(ok, 'OK', reply.body);
    assert.equal((await stack.bob.iq(publishIq(node, secret))).attrs.type, 'result');
    assert.equal((await health(stack)).status, 'running');

    await pg.halt();
    const error = await rejectionOf(stack.bob.iq(publishIq(node, secret)));
    assert.equal(error.type, 'wait');
    const down = await health(stack);
    assert.equal(down.status, 'degraded');
    assert.notEqual(down.store.state, 'ok');
    assert.ok(down.store.error);
    const notReady = await fetch(`${stack.app.httpUrl}/push_appserver/v1/ready`);
    assert.equal(notReady.status, 503, 'not ready while the database is down');
    await notReady.text();

    await pg.resume();
    await eventually(async () => (await health(stack)).store.state === 'ok', 'the store to answer again');
    assert.equal((await stack.bob.iq(publishIq(node, secret))).attrs.type, 'result');
    assert.equal((await health(stack)).status, 'running');
    const ready = await fetch(`${stack.app.httpUrl}/push_appserver/v1/ready`);
    assert.equal([ready.status, (await ready.text()).trim()].join(' '), '200 READY');
  });
});
