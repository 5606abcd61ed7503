/**
 * Push 2.0 on the wire, without a network: the notification element parsed and answered
 * (xmpp/handlers/push2.ts), and what each provider builds from a Push 2.0 payload.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { parse, type Element } from 'ltx';
import type { DispatchResult, PushRequest } from '../../src/core/dispatcher.ts';
import { silentLogger } from '../../src/log.ts';
import { buildApnsRequest, MAX_PAYLOAD_BYTES, type ApnsRequestConfig } from '../../src/providers/apns/request.ts';
import { buildFcmPush2Message } from '../../src/providers/fcm.ts';
import { push2EndpointMessage } from '../../src/providers/push-endpoint.ts';
import type { Notification, Push2Payload } from '../../src/providers/types.ts';
import { parsePush2Notification, push2Handler } from '../../src/xmpp/handlers/push2.ts';

const NS = 'urn:xmpp:push2:0';

function notification(inner: string): Element {
  return parse(`<notification xmlns='${NS}'>${inner}</notification>`);
}

function message(inner: string, attrs = "from='example.org' to='push.example.org' id='m1'"): Element {
  return parse(`<message ${attrs}><notification xmlns='${NS}'>${inner}</notification></message>`);
}

const payload = (overrides: Partial<Push2Payload> = {}): Push2Payload => ({
  ciphertext: Buffer.from('opaque ciphertext bytes'), priority: 'normal', voip: false, jwt: 'h.c.s', jwtKey: 'KEY', audience: 'https://push.example.org', ...overrides,
});

const push2Notification = (overrides: Partial<Push2Payload> = {}): Notification => ({ summary: {}, urgency: 'high', push2: payload(overrides) });

const apnsConfig: ApnsRequestConfig = {
  topic: 'im.example.app', pushType: 'background', priority: 'silent', mutableContent: false, alertText: 'New message', includeBody: false,
  sound: undefined, ttlSeconds: undefined, collapseId: 'collapse', badge: false,
};

describe('Push 2.0 notification parsing', () => {
  test('the captured mod_push2 shape parses into client, priority, voip, ciphertext and JWT', () => {
    const parsed = parsePush2Notification(notification(
      `<client>https://push.localhost/x/node1</client><priority>high</priority><voip/><encrypted xmlns='urn:xmpp:sce:rfc8291:0'><payload>${Buffer.from('abc').toString('base64')}</payload></encrypted><jwt key='QUJD'>a.b.c</jwt>`));
    assert.deepEqual(parsed, { client: 'https://push.localhost/x/node1', priority: 'high', voip: true, payload: Buffer.from('abc'), jwt: { token: 'a.b.c', key: 'QUJD' } });
  });

  test('an absent priority is normal; absent ciphertext and JWT are null (the core refuses them)', () => {
    assert.deepEqual(parsePush2Notification(notification('<client>n</client>')), { client: 'n', priority: 'normal', voip: false, payload: null, jwt: null });
  });

  test('malformed notifications say what is wrong', () => {
    for (const [inner, problem] of [
      ['', /no <client>/],
      ['<client>a</client><client>b</client>', /more than one/],
      ['<client> </client>', /empty/],
      ['<client>n</client><priority>urgent</priority>', /priority/],
      [`<client>n</client><encrypted xmlns='urn:xmpp:sce:rfc8291:0'><payload>not base64!</payload></encrypted>`, /base64/],
      [`<client>n</client><encrypted xmlns='urn:xmpp:sce:rfc8291:0'/>`, /base64/],
      ['<client>n</client><jwt>a.b.c</jwt>', /key attribute/],
    ] as const) {
      const parsed = parsePush2Notification(notification(inner));
      assert.equal(typeof parsed, 'string', inner);
      assert.match(parsed as string, problem);
    }
  });
});

describe('Push 2.0 message answers', () => {
  const answering = (result: DispatchResult & { condition?: 'not-authorized' }) => {
    const seen: PushRequest[] = [];
    const handler = push2Handler({ async dispatch(request) { seen.push(request); return result; } }, silentLogger);
    return { handler, seen };
  };

  const errorOf = (reply: Element | undefined) => {
    const error = reply?.getChild('error');
    return [reply?.attrs.type, reply?.attrs.to, reply?.attrs.id, error?.attrs.type, error?.getChildElements()[0]?.name];
  };

  test('a delivered notification gets no reply, and the request is dialect push2 naming the client', async () => {
    const { handler, seen } = answering({ kind: 'delivered' });
    assert.equal(await handler(message('<client>n</client>')), undefined);
    assert.equal(seen[0].dialect, 'push2');
    assert.equal(seen[0].node, 'n');
    assert.equal(seen[0].from, 'example.org');
    assert.equal(seen[0].push2?.client, 'n');
    assert.equal(seen[0].options.size, 0);
  });

  test('a <voip/> notification\'s request says so in its options, which a stored retry keeps', async () => {
    const { handler, seen } = answering({ kind: 'delivered' });
    await handler(message('<client>n</client><voip/>'));
    assert.equal(seen[0].push2?.voip, true);
    assert.deepEqual([...seen[0].options], [['push2-voip', '1']]);
  });

  test('each dispatch result maps to its message error, addressed back to the sender with the same id', async () => {
    const cases: Array<[DispatchResult & { condition?: 'not-authorized' }, string, string]> = [
      [{ kind: 'not-found' }, 'cancel', 'item-not-found'],
      [{ kind: 'forbidden', reason: 'foreign' }, 'auth', 'forbidden'],
      [{ kind: 'forbidden', reason: 'bad jwt', condition: 'not-authorized' }, 'auth', 'not-authorized'],
      [{ kind: 'temporary', reason: '503' }, 'wait', 'resource-constraint'],
      [{ kind: 'rejected', reason: 'too large' }, 'modify', 'not-acceptable'],
    ];
    for (const [result, type, condition] of cases) {
      const reply = await answering(result).handler(message('<client>n</client>'));
      assert.deepEqual(errorOf(reply), ['error', 'example.org', 'm1', type, condition], result.kind);
    }
  });

  test('a malformed notification is modify/bad-request and never dispatched', async () => {
    const { handler, seen } = answering({ kind: 'delivered' });
    assert.deepEqual(errorOf(await handler(message('<priority>high</priority>'))), ['error', 'example.org', 'm1', 'modify', 'bad-request']);
    assert.equal(seen.length, 0);
  });

  test('an error message and a message without a notification are never answered', async () => {
    const { handler, seen } = answering({ kind: 'not-found' });
    assert.equal(await handler(message('<client>n</client>', "from='example.org' to='push.example.org' type='error' id='e'")), undefined);
    assert.equal(await handler(parse("<message from='a@example.org' to='push.example.org'><body>hi</body></message>")), undefined);
    assert.equal(seen.length, 0);
  });
});

describe('Push 2.0 payloads per provider', () => {
  test('APNS: an alert with mutable-content, the app\'s alert text and the base64 ciphertext in "push2"; priority 10', () => {
    const built = buildApnsRequest(apnsConfig, push2Notification(), 0);
    assert.ok(built.ok);
    const body = JSON.parse(built.request.payload);
    assert.deepEqual(body, { aps: { alert: { body: 'New message' }, 'mutable-content': 1 }, push2: Buffer.from('opaque ciphertext bytes').toString('base64') });
    assert.equal(built.request.headers['apns-push-type'], 'alert');
    assert.equal(built.request.headers['apns-topic'], 'im.example.app');
    assert.equal(built.request.headers['apns-priority'], '10');
    assert.equal(built.request.headers['apns-collapse-id'], undefined, 'no Push 2.0 message replaces another');
  });

  test('APNS: low priority is 5; <voip/> is a VoIP push on <topic>.voip', () => {
    const low = buildApnsRequest(apnsConfig, push2Notification({ priority: 'low' }), 0);
    assert.ok(low.ok);
    assert.equal(low.request.headers['apns-priority'], '5');
    const voip = buildApnsRequest(apnsConfig, push2Notification({ voip: true, priority: 'high' }), 0);
    assert.ok(voip.ok);
    assert.equal(voip.request.headers['apns-push-type'], 'voip');
    assert.equal(voip.request.headers['apns-topic'], 'im.example.app.voip');
    assert.equal(JSON.parse(voip.request.payload).push2, Buffer.from('opaque ciphertext bytes').toString('base64'));
  });

  test('APNS: a ciphertext over the 4 KB limit is refused, never shortened', () => {
    const built = buildApnsRequest(apnsConfig, push2Notification({ ciphertext: Buffer.alloc(3100) }), 0);
    assert.equal(built.ok, false);
    assert.ok(!built.ok && built.bytes > MAX_PAYLOAD_BYTES);
  });

  test('FCM: a data message carrying the ciphertext; high is HIGH, normal and low are NORMAL; oversized is refused', () => {
    const target = { app: 'android', node: 'node-1', token: 'tok' };
    const high = buildFcmPush2Message({ ttlSeconds: 60 }, target, payload({ priority: 'high' }));
    assert.ok(typeof high !== 'string');
    const message = high.message as { data: Record<string, string>; android: Record<string, string>; notification?: unknown };
    assert.equal(message.data.push2, Buffer.from('opaque ciphertext bytes').toString('base64'));
    assert.equal(message.android.priority, 'HIGH');
    assert.equal(message.notification, undefined);
    const normal = buildFcmPush2Message({ ttlSeconds: 60 }, target, payload({ priority: 'normal' }));
    assert.equal(typeof normal !== 'string' && (normal.message as { android: Record<string, string> }).android.priority, 'NORMAL');
    assert.match(buildFcmPush2Message({ ttlSeconds: 60 }, target, payload({ ciphertext: Buffer.alloc(3100) })) as string, /over the FCM limit/);
  });

  test('WebPush/UnifiedPush: the ciphertext is the body; the publisher\'s JWT is used only when its aud is the endpoint origin', () => {
    const endpoint = new URL('https://push.example.net/sub/1');
    const ours = push2EndpointMessage(payload({ priority: 'low' }), 600, endpoint, () => 'vapid t=ours, k=ours');
    assert.ok(typeof ours !== 'string');
    assert.deepEqual(ours.body, Buffer.from('opaque ciphertext bytes'));
    assert.equal(ours.headers['content-encoding'], 'aes128gcm');
    assert.equal(ours.headers.urgency, 'low');
    assert.equal(ours.headers.ttl, '600');
    assert.equal(ours.headers.authorization, 'vapid t=ours, k=ours');
    const theirs = push2EndpointMessage(payload({ audience: 'https://push.example.net' }), 600, endpoint, () => 'vapid t=ours, k=ours');
    assert.equal(typeof theirs !== 'string' && theirs.headers.authorization, 'vapid t=h.c.s, k=KEY');
    const none = push2EndpointMessage(payload(), 600, endpoint, undefined);
    assert.equal(typeof none !== 'string' && none.headers.authorization, undefined);
    assert.match(push2EndpointMessage(payload({ ciphertext: Buffer.alloc(4097) }), 600, endpoint, undefined) as string, /over the push message limit/);
  });
});
