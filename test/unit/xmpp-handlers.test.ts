/** Stanza in, stanza out: the iq router and the publish handler, with no socket. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { parse, type Element } from 'ltx';
import type { DispatchResult, PushRequest } from '../../src/core/dispatcher.ts';
import { silentLogger } from '../../src/log.ts';
import { IqRouter } from '../../src/xmpp/iq-router.ts';
import { publishHandler } from '../../src/xmpp/handlers/publish.ts';
import { Disco } from '../../src/xmpp/handlers/disco.ts';
import { pingHandler } from '../../src/xmpp/handlers/ping.ts';
import { NS } from '../../src/xmpp/stanzas.ts';
import { replyForDispatch } from '../../src/xmpp/replies.ts';

function routerAnswering(result: DispatchResult, seen: PushRequest[] = []) {
  const disco = new Disco('push-appserver');
  return new IqRouter(silentLogger)
    .on('set', 'pubsub', NS.pubsub, publishHandler({ dispatch: async (request) => { seen.push(request); return result; } }))
    .on('get', 'query', NS.discoInfo, disco.info)
    .on('get', 'ping', NS.ping, pingHandler);
}

const PUBLISH = `<iq type='set' from='example.com' to='push.example.org' id='a1'>
  <pubsub xmlns='http://jabber.org/protocol/pubsub'>
    <publish node='NODE'><item>
      <notification xmlns='urn:xmpp:push:0'>
        <x xmlns='jabber:x:data'>
          <field var='FORM_TYPE'><value>urn:xmpp:push:summary</value></field>
          <field var='message-count'><value>1</value></field>
          <field var='last-message-sender'><value>juliet@capulet.example/balcony</value></field>
          <field var='last-message-body'><value>New Message!</value></field>
        </x>
      </notification></item></publish>
    <publish-options><x xmlns='jabber:x:data' type='submit'>
      <field var='FORM_TYPE'><value>http://jabber.org/protocol/pubsub#publish-options</value></field>
      <field var='secret'><value>SECRET</value></field>
      <field var='pushModule'><value>monal-prod</value></field>
    </x></publish-options>
  </pubsub>
</iq>`;

function errorOf(reply: Element | undefined) {
  const error = reply?.getChild('error');
  return [error?.attrs.type, error?.getChildElements()[0]?.name];
}

test('the XEP-0357 example publish becomes a push request with summary, secret and options', async () => {
  const seen: PushRequest[] = [];
  const reply = await routerAnswering({ kind: 'delivered' }, seen).handle(parse(PUBLISH));
  assert.equal(reply?.attrs.type, 'result');
  assert.equal(reply?.attrs.id, 'a1');
  assert.equal(reply?.attrs.to, 'example.com');
  assert.equal(reply?.attrs.from, 'push.example.org');
  assert.equal(seen[0].node, 'NODE');
  assert.equal(seen[0].secret, 'SECRET');
  assert.equal(seen[0].options.get('pushModule'), 'monal-prod');
  assert.deepEqual(seen[0].summary, { messageCount: 1, lastMessageSender: 'juliet@capulet.example/balcony', lastMessageBody: 'New Message!' });
});

test('a summary form beside the notification element is still read', async () => {
  const seen: PushRequest[] = [];
  const stanza = `<iq type='set' from='a.example' id='x'><pubsub xmlns='${NS.pubsub}'><publish node='N'><item>
    <notification xmlns='urn:xmpp:push:0'/><x xmlns='jabber:x:data'><field var='FORM_TYPE'><value>urn:xmpp:push:summary</value></field>
    <field var='message-count'><value>7</value></field></x></item></publish></pubsub></iq>`;
  await routerAnswering({ kind: 'delivered' }, seen).handle(parse(stanza));
  assert.equal(seen[0].summary.messageCount, 7);
  assert.equal(seen[0].secret, null);
});

test('a summary form without FORM_TYPE inside the notification is still read and answered', async () => {
  const seen: PushRequest[] = [];
  const stanza = `<iq type='set' from='a.example' id='x'><pubsub xmlns='${NS.pubsub}'><publish node='N'><item>
    <notification xmlns='urn:xmpp:push:0'><x xmlns='jabber:x:data' type='form'>
      <field var='message-count'><value>2</value></field>
      <field var='last-message-body'><value>hi</value></field></x></notification></item></publish></pubsub></iq>`;
  const reply = await routerAnswering({ kind: 'delivered' }, seen).handle(parse(stanza));
  assert.equal(reply?.attrs.type, 'result');
  assert.equal(seen.length, 1);
  assert.deepEqual(seen[0].summary, { messageCount: 2, lastMessageBody: 'hi' });
  assert.equal(seen[0].node, 'N');
});

test('an encrypted Tigase payload is an ordinary wake-up', async () => {
  const seen: PushRequest[] = [];
  const stanza = `<iq type='set' from='a.example' id='x'><pubsub xmlns='${NS.pubsub}'><publish node='N'><item>
    <notification xmlns='urn:xmpp:push:0'><encrypted xmlns='tigase:push:encrypt:0'>AAAA</encrypted></notification></item></publish></pubsub></iq>`;
  const reply = await routerAnswering({ kind: 'delivered' }, seen).handle(parse(stanza));
  assert.equal(reply?.attrs.type, 'result');
  assert.deepEqual(seen[0].summary, {});
});

test('a publish without a node is modify/bad-request with nodeid-required', async () => {
  const reply = await routerAnswering({ kind: 'delivered' }).handle(parse(`<iq type='set' id='x' from='a'><pubsub xmlns='${NS.pubsub}'><publish/></pubsub></iq>`));
  assert.deepEqual(errorOf(reply), ['modify', 'bad-request']);
  assert.ok(reply?.getChild('error')?.getChild('nodeid-required', NS.pubsubErrors));
});

test('a pubsub request without a publish is modify/bad-request', async () => {
  const reply = await routerAnswering({ kind: 'delivered' }).handle(parse(`<iq type='set' id='x' from='a'><pubsub xmlns='${NS.pubsub}'/></iq>`));
  assert.deepEqual(errorOf(reply), ['modify', 'bad-request']);
});

test('each dispatch result maps to the error type DESIGN §4 demands', () => {
  const cases: Array<[DispatchResult, unknown]> = [
    [{ kind: 'delivered' }, true],
    [{ kind: 'not-found' }, ['cancel', 'item-not-found']],
    [{ kind: 'forbidden', reason: 'x' }, ['auth', 'forbidden']],
    [{ kind: 'temporary', reason: 'x' }, ['wait', 'resource-constraint']],
    [{ kind: 'rejected', reason: 'x' }, ['wait', 'not-acceptable']],
  ];
  for (const [result, expected] of cases) {
    const reply = replyForDispatch(result);
    assert.deepEqual(reply === true ? true : [reply.type, reply.condition], expected, result.kind);
  }
});

test('an iq with an unknown payload gets cancel/service-unavailable', async () => {
  const reply = await routerAnswering({ kind: 'delivered' }).handle(parse(`<iq type='get' id='q' from='a'><query xmlns='jabber:iq:version'/></iq>`));
  assert.deepEqual(errorOf(reply), ['cancel', 'service-unavailable']);
});

test('iq results and errors are never answered', async () => {
  const router = routerAnswering({ kind: 'delivered' });
  assert.equal(await router.handle(parse(`<iq type='result' id='q' from='a'/>`)), undefined);
  assert.equal(await router.handle(parse(`<iq type='error' id='q' from='a'/>`)), undefined);
});

test('a handler that throws becomes wait/internal-server-error', async () => {
  const router = new IqRouter(silentLogger).on('get', 'ping', NS.ping, () => { throw new Error('bug'); });
  const reply = await router.handle(parse(`<iq type='get' id='p' from='a'><ping xmlns='urn:xmpp:ping'/></iq>`));
  assert.deepEqual(errorOf(reply), ['wait', 'internal-server-error']);
});

test('disco#info on an unknown node is item-not-found', async () => {
  const reply = await routerAnswering({ kind: 'delivered' }).handle(parse(`<iq type='get' id='d' from='a'><query xmlns='${NS.discoInfo}' node='nope'/></iq>`));
  assert.deepEqual(errorOf(reply), ['cancel', 'item-not-found']);
});
