/**
 * Hostile input through a real Prosody: a stanza over our limit is skipped and answered while
 * publishes are on their way (also one whose opening tag alone is over it), the component stream
 * stays up, and the next publish works. Prosody's own c2s limit is raised so the stanza reaches us.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { xml } from '@xmpp/client';
import { prosodyMissing } from '../support/prosody.ts';
import { publishIq, startPushStack, type PushStack } from '../support/push-stack.ts';
import { rejectionOf } from '../support/xmpp-client.ts';

const skip = prosodyMissing();
const LIMIT = 16 * 1024;

describe('hostile input through Prosody', { skip, timeout: 120_000 }, () => {
  let stack: PushStack;

  before(async () => {
    stack = await startPushStack({ xmpp: { max_stanza_bytes: LIMIT } }, { extraGlobalConfig: 'c2s_stanza_size_limit = 4 * 1024 * 1024' });
  });

  after(async () => {
    await stack?.stop();
  });

  async function register(node: string) {
    const reply = await stack.app.post('/push_appserver/v1/register', { type: 'apns', node, token: 'f'.repeat(64) });
    assert.equal(reply.status, 200, reply.body);
    const [, pubsubNode, secret] = reply.body.split('\n');
    return { node: pubsubNode, secret };
  }

  /** The component stream stayed up since log line `from`: no reconnect, still online. */
  function assertStreamStayedUp(from: number) {
    const since = stack.app.logLines.slice(from);
    assert.equal(since.filter((line) => /component offline|closing the stream|component online/.test(line)).length, 0, since.join(''));
    assert.equal(stack.app.server.xmpp.component.state, 'online');
  }

  test('an iq over our stanza limit is answered modify/policy-violation while publishes are answered, without a reconnect', async () => {
    const { node, secret } = await register('hostile-1');
    const { app, bob } = stack;
    const from = app.logLines.length;
    const publishes = Array.from({ length: 20 }, () => bob.iq(publishIq(node, secret)));
    const huge = bob.iq(xml('iq', { type: 'set', to: 'push.localhost' }, xml('query', { xmlns: 'urn:example:big' }, 'x'.repeat(LIMIT * 8))));
    const more = Array.from({ length: 20 }, () => bob.iq(publishIq(node, secret)));
    const error = await rejectionOf(huge);
    assert.deepEqual([error.type, error.condition], ['modify', 'policy-violation']);
    for (const reply of await Promise.all([...publishes, ...more])) assert.equal(reply.attrs.type, 'result');
    const next = await bob.iq(publishIq(node, secret));
    assert.equal(next.attrs.type, 'result');
    assertStreamStayedUp(from);
  });

  test('a stanza whose opening tag alone is over the limit is dropped and the stream stays up', async () => {
    const { node, secret } = await register('hostile-2');
    const { app, bob } = stack;
    const from = app.logLines.length;
    const skipped = app.server.xmpp.skippedStanzas;
    await bob.raw.send(xml('message', { to: 'push.localhost', 'x-pad': 'p'.repeat(LIMIT * 4) }, xml('body', {}, 'hi')));
    const deadline = Date.now() + 15_000;
    while (app.server.xmpp.skippedStanzas === skipped) {
      assert.ok(Date.now() < deadline, 'the oversized message never reached the component');
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    const reply = await bob.iq(publishIq(node, secret));
    assert.equal(reply.attrs.type, 'result');
    assert.equal(app.logLines.slice(from).filter((line) => /component offline/.test(line)).length, 0);
  });

  // Prosody writes attributes in its Lua table's hash order (another after each start), so the
  // large one comes before or after the id by chance: the answer must not depend on it.
  test('an iq whose opening tag alone is over the limit is answered modify/policy-violation and the stream stays up', async () => {
    const { node, secret } = await register('hostile-3');
    const { app, bob } = stack;
    const from = app.logLines.length;
    const skipped = app.server.xmpp.skippedStanzas;
    const huge = xml('iq', { type: 'get', to: 'push.localhost', 'x-pad': 'p'.repeat(LIMIT * 4) }, xml('ping', { xmlns: 'urn:xmpp:ping' }));
    const error = await rejectionOf(bob.iq(huge));
    assert.deepEqual([error.type, error.condition], ['modify', 'policy-violation']);
    assert.equal(app.server.xmpp.skippedStanzas, skipped + 1);
    const reply = await bob.iq(publishIq(node, secret));
    assert.equal(reply.attrs.type, 'result');
    assertStreamStayedUp(from);
  });
});
