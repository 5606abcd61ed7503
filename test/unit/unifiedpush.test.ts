/**
 * The UnifiedPush provider (src/providers/unifiedpush.ts) and the address guard it relies on
 * (src/providers/address-guard.ts): endpoints are user input, so private addresses are refused at
 * registration (literal IPs) and at connect time (names, through the guarded lookup).
 */
import assert from 'node:assert/strict';
import { createServer, type Socket } from 'node:net';
import { once } from 'node:events';
import { after, before, test } from 'node:test';
import { ConfigError, TableReader, type Table } from '../../src/config/reader.ts';
import { silentLogger } from '../../src/log.ts';
import { forbiddenAddressReason, guardedLookup } from '../../src/providers/address-guard.ts';
import type { Notification, Provider } from '../../src/providers/types.ts';
import { createUnifiedPushProvider, unifiedPushProvider, type UnifiedPushDependencies } from '../../src/providers/unifiedpush.ts';
import { startMockPushEndpoint, type MockPushEndpoint } from '../support/mock-push-endpoint.ts';
import { closedPort } from '../support/ports.ts';
import { testPki } from '../support/tls.ts';

let plainMock: MockPushEndpoint;
let tlsMock: MockPushEndpoint;
const providers: Provider[] = [];

before(async () => {
  plainMock = await startMockPushEndpoint({ tls: false });
  tlsMock = await startMockPushEndpoint({ tls: true });
});

after(async () => {
  await Promise.all(providers.map((provider) => provider.close()));
  await plainMock.close();
  await tlsMock.close();
});

function parse(table: Table) {
  return unifiedPushProvider.parseConfig(new TableReader('test.toml', 'apps.up', table));
}

function provider(table: Table = {}, dependencies: UnifiedPushDependencies = {}): Provider {
  const created = createUnifiedPushProvider(parse(table), { app: 'up', logger: silentLogger }, dependencies);
  providers.push(created);
  return created;
}

/** The test endpoints live on loopback, so most tests allow what production refuses. */
const loopbackAllowed = { allow_http: true, allow_private: true };
const wakeUp: Notification = { summary: { messageCount: 3 }, urgency: 'normal' };

test('the config defaults to https only, no private addresses, four weeks ttl and no body', () => {
  const config = parse({});
  assert.deepEqual(config, { ttlSeconds: 28 * 24 * 3600, includeBody: false, allowHttp: false, allowPrivate: false, ca: undefined });
});

test('an unknown key or a ttl that is not a whole number is a configuration error naming the key', () => {
  for (const [table, key] of [[{ allow_privat: true }, 'apps.up.allow_privat'], [{ ttl: 'soon' }, 'apps.up.ttl']] as const) {
    assert.throws(() => parse(table), (error: unknown) => error instanceof ConfigError && error.key === key);
  }
});

test('the address guard refuses loopback, private, link-local, CGNAT, ULA and IPv4 hidden in IPv6, and passes public addresses', () => {
  const refused = [
    '127.0.0.1', '127.255.0.9', '0.0.0.0', '0.1.2.3', '10.1.2.3', '172.16.0.1', '172.31.255.255', '192.168.1.1',
    '100.64.0.1', '100.127.255.254', '169.254.169.254', '224.0.0.1', '255.255.255.255',
    '::1', '::', 'fe80::1', 'fc00::1', 'fd12:3456::1', '::ffff:127.0.0.1', '::ffff:7f00:1', '::ffff:10.0.0.1',
    '::ffff:169.254.169.254', '64:ff9b::a9fe:a9fe', '2002:c0a8:0101::1', 'ff02::1', 'fe80::1%eth0',
  ];
  for (const address of refused) assert.notEqual(forbiddenAddressReason(address), null, address);
  const allowed = ['8.8.8.8', '1.1.1.1', '172.32.0.1', '100.128.0.1', '192.169.0.1', '2606:4700:4700::1111', '2a00:1450:4001::200e', '::ffff:8.8.8.8'];
  for (const address of allowed) assert.equal(forbiddenAddressReason(address), null, address);
});

test('an https endpoint is a valid token and an http one only with allow_http', () => {
  assert.equal(provider().validateToken('https://ntfy.example.net/upAbC123?up=1'), null);
  assert.match(provider().validateToken('http://ntfy.example.net/upAbC123') ?? '', /https/);
  assert.equal(provider({ allow_http: true }).validateToken('http://ntfy.example.net/upAbC123'), null);
  assert.match(provider({ allow_http: true }).validateToken('ftp://ntfy.example.net/x') ?? '', /http or https/);
});

test('endpoints at literal private addresses are refused at registration unless allow_private', () => {
  const guarded = provider({ allow_http: true });
  const literals = [
    'https://127.0.0.1/up', 'https://[::1]:8443/up', 'http://10.0.0.7/up', 'https://192.168.178.1/up', 'https://172.20.1.1/up',
    'https://100.100.100.100/up', 'http://169.254.169.254/latest/meta-data', 'https://[fd00::5]/up', 'https://[fe80::1]/up',
    'https://[::ffff:127.0.0.1]/up', 'https://0.0.0.0/up', 'https://2130706433/up', 'https://0x7f.1/up',
  ];
  for (const endpoint of literals) assert.match(guarded.validateToken(endpoint) ?? 'accepted', /refused/, endpoint);
  const open = provider({ allow_http: true, allow_private: true });
  for (const endpoint of literals) assert.equal(open.validateToken(endpoint), null, endpoint);
});

test('junk tokens are refused: not a URL, spaces, credentials, longer than 4096', () => {
  const up = provider();
  assert.match(up.validateToken('not a url') ?? '', /URL/);
  assert.match(up.validateToken('nourl') ?? '', /endpoint URL/);
  assert.match(up.validateToken('https://user:secret@ntfy.example.net/x') ?? '', /credentials/);
  assert.match(up.validateToken(`https://ntfy.example.net/${'a'.repeat(4096)}`) ?? '', /4096/);
});

test('a push is POSTed as JSON with the node and message count and the TTL and Urgency headers', async () => {
  const endpoint = plainMock.endpoint();
  const outcome = await provider({ ...loopbackAllowed, ttl: 600 }).send({ app: 'up', node: 'node-7', token: endpoint }, wakeUp);
  assert.equal(outcome.kind, 'delivered');
  const [received] = plainMock.requestsTo(endpoint);
  assert.deepEqual(received.content, { node: 'node-7', 'message-count': 3 });
  assert.equal(received.headers.ttl, '600');
  assert.equal(received.headers.urgency, 'normal');
  assert.equal(received.headers['content-type'], 'application/json');
});

test('sender and body are sent only with include_body, and an important message has Urgency high', async () => {
  const important: Notification = { summary: { messageCount: 1, lastMessageSender: 'romeo@montague.example', lastMessageBody: 'Hi' }, urgency: 'high' };
  const without = plainMock.endpoint();
  await provider(loopbackAllowed).send({ app: 'up', node: 'n', token: without }, important);
  assert.deepEqual(plainMock.requestsTo(without)[0].content, { node: 'n', 'message-count': 1 });
  assert.equal(plainMock.requestsTo(without)[0].headers.urgency, 'high');
  const withBody = plainMock.endpoint();
  await provider({ ...loopbackAllowed, include_body: true }).send({ app: 'up', node: 'n', token: withBody }, important);
  assert.deepEqual(plainMock.requestsTo(withBody)[0].content, { node: 'n', 'message-count': 1, 'last-message-sender': 'romeo@montague.example', 'last-message-body': 'Hi' });
});

test('an https endpoint is reached with the configured ca_file', async () => {
  const endpoint = tlsMock.endpoint([{ status: 200 }]);
  const outcome = await provider({ allow_private: true, ca_file: testPki().caFile }).send({ app: 'up', node: 'n', token: endpoint }, wakeUp);
  assert.equal(outcome.kind, 'delivered');
  assert.equal(tlsMock.requestsTo(endpoint).length, 1);
});

test('a name resolving to loopback is refused at connect time without allow_private, and nothing reaches it', async () => {
  const endpoint = plainMock.endpoint().replace('127.0.0.1', 'localhost');
  const guarded = provider({ allow_http: true, allowed_ports: [Number(new URL(endpoint).port)] });
  assert.equal(guarded.validateToken(endpoint), null, 'a name passes registration: only connecting tells');
  const outcome = await guarded.send({ app: 'up', node: 'n', token: endpoint }, wakeUp);
  assert.equal(outcome.kind, 'rejected');
  assert.match(outcome.kind === 'rejected' ? outcome.reason : '', /localhost resolves only to addresses we may not contact/);
  assert.equal(plainMock.requestsTo(endpoint).length, 0);

  const open = await provider(loopbackAllowed).send({ app: 'up', node: 'n', token: endpoint }, wakeUp);
  assert.equal(open.kind, 'delivered');
});

test('a name that DNS rebinds to an internal address after registration is refused when connecting', async () => {
  let answer = '93.184.216.34';
  const up = provider({ allow_http: true }, { resolveAll: (_host, _options, callback) => callback(null, [{ address: answer, family: 4 }]) });
  assert.equal(up.validateToken('http://rebind.example.net/up'), null);
  answer = '10.0.0.1';
  const outcome = await up.send({ app: 'up', node: 'n', token: 'http://rebind.example.net/up' }, wakeUp);
  assert.equal(outcome.kind, 'rejected');
  assert.match(outcome.kind === 'rejected' ? outcome.reason : '', /10\.0\.0\.1 \(private/);
});

test('a stored endpoint at a literal private address is refused at send time too', async () => {
  const outcome = await provider({ allow_http: true }).send({ app: 'up', node: 'n', token: 'http://192.168.0.1/up' }, wakeUp);
  assert.equal(outcome.kind, 'rejected');
});

test('the guarded lookup keeps the public addresses of a name that also has private ones', async () => {
  const lookup = guardedLookup((_host, _options, callback) => callback(null, [
    { address: '127.0.0.1', family: 4 }, { address: '93.184.216.34', family: 4 }, { address: 'fd00::1', family: 6 },
  ]));
  const all = await new Promise<unknown>((resolve) => lookup('mixed.example', { all: true }, (error: unknown, addresses: unknown) => resolve(error ?? addresses)));
  assert.deepEqual(all, [{ address: '93.184.216.34', family: 4 }]);
  const one = await new Promise<unknown>((resolve) => lookup('mixed.example', {}, (error: unknown, address: unknown, family: unknown) => resolve(error ?? [address, family])));
  assert.deepEqual(one, ['93.184.216.34', 4]);
});

test('404 and 410 mean the endpoint is gone', async () => {
  for (const status of [404, 410]) {
    const endpoint = plainMock.endpoint([{ status }]);
    assert.equal((await provider(loopbackAllowed).send({ app: 'up', node: 'n', token: endpoint }, wakeUp)).kind, 'token-dead', `status ${status}`);
  }
});

test('429 and 503 ask for a retry, honouring Retry-After', async () => {
  const limited = plainMock.endpoint([{ status: 429, retryAfter: 2 }]);
  const busy = plainMock.endpoint([{ status: 503, retryAfter: new Date(Date.now() + 120_000).toUTCString() }]);
  const up = provider(loopbackAllowed);
  const first = await up.send({ app: 'up', node: 'n', token: limited }, wakeUp);
  assert.deepEqual(first.kind === 'retry-after' ? first.ms : first, 2000);
  const second = await up.send({ app: 'up', node: 'n', token: busy }, wakeUp);
  assert.equal(second.kind, 'retry-after');
  assert.ok(second.kind === 'retry-after' && second.ms > 100_000 && second.ms <= 120_000, JSON.stringify(second));
});

test('403 from a distributor is a refusal of this endpoint, not of our credentials; 413 is a rejected message', async () => {
  const up = provider(loopbackAllowed);
  for (const status of [403, 413]) {
    const endpoint = plainMock.endpoint([{ status }]);
    assert.equal((await up.send({ app: 'up', node: 'n', token: endpoint }, wakeUp)).kind, 'rejected', `status ${status}`);
  }
});

test('an endpoint nobody listens on asks for a retry', async (t) => {
  const refusing = await closedPort();
  t.after(() => refusing.release());
  const outcome = await provider(loopbackAllowed).send({ app: 'up', node: 'n', token: `http://127.0.0.1:${refusing.port}/up` }, wakeUp);
  assert.equal(outcome.kind, 'retry-after');
  assert.match(outcome.kind === 'retry-after' ? outcome.reason : '', /ECONNREFUSED/);
});

test('an endpoint that never answers asks for a retry once the timeout passes', async () => {
  const sockets: Socket[] = [];
  const silent = createServer((socket) => sockets.push(socket));
  silent.listen(0, '127.0.0.1');
  await once(silent, 'listening');
  try {
    const port = (silent.address() as { port: number }).port;
    const outcome = await provider(loopbackAllowed, { timeoutMs: 200 }).send({ app: 'up', node: 'n', token: `http://127.0.0.1:${port}/up` }, wakeUp);
    assert.equal(outcome.kind, 'retry-after');
    assert.match(outcome.kind === 'retry-after' ? outcome.reason : '', /within 200 ms/);
  } finally {
    for (const socket of sockets) socket.destroy();
    silent.close();
  }
});

test('the address guard also refuses SIIT, local-use NAT64, Teredo and the 6to4 relay anycast', () => {
  for (const address of ['::ffff:0:808:808', '64:ff9b:1::808:808', '2001::1', '2001:0:4136:e378:8000:63bf:3fff:fdd2', '192.88.99.1']) {
    assert.notEqual(forbiddenAddressReason(address), null, address);
  }
  for (const address of ['2001:4860:4860::8888', '192.88.100.1', '64:ff9b:2::1']) assert.equal(forbiddenAddressReason(address), null, address);
});

test('an endpoint on a port other than 443 is refused unless the app lists it in allowed_ports', () => {
  assert.match(provider({}).validateToken('https://ntfy.example.net:8443/up') ?? '', /port 8443 is not allowed/);
  assert.equal(provider({ allow_http: true }).validateToken('http://ntfy.example.net/up'), null, 'allow_http implies port 80');
  assert.match(provider({ allow_http: true }).validateToken('http://ntfy.example.net:8080/up') ?? '', /port 8080/);
  assert.equal(provider({ allowed_ports: [8443] }).validateToken('https://ntfy.example.net:8443/up'), null);
  assert.equal(provider({}).validateToken('https://ntfy.example.net:443/up'), null);
});
