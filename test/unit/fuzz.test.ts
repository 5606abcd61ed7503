/**
 * Fuzzing (fast-check, seeded and bounded so `npm test` stays fast and repeatable): hostile bytes,
 * stanzas, forms, HTTP requests and TOML documents. Properties: nothing throws out of a handler,
 * every iq get/set with an id gets exactly one answer, memory stays bounded, the server keeps
 * serving — for the iq handlers alone and end to end on one component stream.
 *
 * Regression cases: a failure found here is kept as a plain test of the unit it broke, named after
 * its seed, so it runs whatever the seed or the generators become. So far: stream-parser.test.ts,
 * "a stanza limit smaller than the stream header still lets the stream open" (seed 20240610).
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import fc from 'fast-check';
import { Element, escapeXML, parse } from 'ltx';
import { parseAppSettings } from '../../src/app.ts';
import { parseDocument } from '../../src/config/load.ts';
import { ConfigError } from '../../src/config/reader.ts';
import { readConfig } from '../../src/config/schema.ts';
import { Dispatcher } from '../../src/core/dispatcher.ts';
import { Registrations } from '../../src/core/registrations.ts';
import { HttpServer } from '../../src/http/server.ts';
import { addV1Routes } from '../../src/http/v1.ts';
import { silentLogger } from '../../src/log.ts';
import { SqliteStore } from '../../src/store/sqlite.ts';
import { AdHocCommands, COMMAND_NODES } from '../../src/xmpp/handlers/commands.ts';
import { publishHandler } from '../../src/xmpp/handlers/publish.ts';
import { IqRouter } from '../../src/xmpp/iq-router.ts';
import { NS } from '../../src/xmpp/stanzas.ts';
import { OPENING_TAG_KEPT_BYTES, StreamParser, type OversizedStanza } from '../../src/xmpp/stream-parser.ts';
import { XmppService } from '../../src/xmpp/service.ts';
import { createServer, type AddressInfo, type Server, type Socket } from 'node:net';
import { directoryOf, scriptedProvider } from '../support/fakes.ts';

const SEED = 20_240_610;
const runs = (numRuns: number) => ({ seed: SEED, numRuns });
const HEADER = `<stream:stream xmlns='jabber:component:accept' xmlns:stream='http://etherx.jabber.org/streams' id='fz'>`;

/** Splits bytes at random points. */
const chunked = (bytes: Buffer) => fc.array(fc.nat({ max: bytes.length }), { maxLength: 12 }).map((cuts) => {
  const points = [...new Set([0, ...cuts.sort((a, b) => a - b), bytes.length])];
  const chunks: Buffer[] = [];
  for (let i = 1; i < points.length; i += 1) chunks.push(bytes.subarray(points[i - 1], points[i]));
  return chunks;
});

interface Observed { stanzas: string[]; oversized: number; errors: number; ends: number; maxBuffered: number }

function feed(chunks: Buffer[], limit: number): Observed {
  const seen: Observed = { stanzas: [], oversized: 0, errors: 0, ends: 0, maxBuffered: 0 };
  const parser = new StreamParser({
    streamStart: () => {},
    stanza: (element) => seen.stanzas.push(element.toString()),
    oversized: () => { seen.oversized += 1; },
    streamEnd: () => { seen.ends += 1; },
    error: () => { seen.errors += 1; },
  }, limit);
  for (const chunk of chunks) {
    parser.write(chunk);
    seen.maxBuffered = Math.max(seen.maxBuffered, (parser as unknown as { bufferedBytes: number }).bufferedBytes);
  }
  return seen;
}

const name = fc.stringMatching(/^[a-z][a-z0-9:-]{0,12}$/);
const text = fc.string({ maxLength: 40 });
/** Well-formed stanzas (ltx serialises them, so escaping is right), some nested, some large. */
const stanza: fc.Arbitrary<Element> = fc.letrec<{ node: Element }>((tie) => ({
  node: fc.tuple(name, fc.dictionary(fc.stringMatching(/^[a-z]{1,6}$/), text, { maxKeys: 3 }), fc.array(fc.oneof(text, tie('node')), { maxLength: 3 }))
    .map(([n, attrs, children]) => {
      const element = new Element(n, attrs);
      for (const child of children) {
        if (typeof child === 'string') element.t(child);
        else element.cnode(child as Element);
      }
      return element;
    }),
})).node;

describe('fuzz: stream parser', () => {
  test('random bytes in random chunks never throw and never buffer more than the limit plus one chunk', () => {
    fc.assert(fc.property(fc.uint8Array({ maxLength: 2000 }).chain((body) => {
      const bytes = Buffer.concat([Buffer.from(HEADER), Buffer.from(body)]);
      return chunked(bytes);
    }), (chunks) => {
      const limit = 4096;
      const seen = feed(chunks, limit);
      const largest = Math.max(0, ...chunks.map((chunk) => chunk.length));
      assert.ok(seen.maxBuffered <= limit + largest, `buffered ${seen.maxBuffered}`);
      assert.ok(seen.errors <= 1);
    }), runs(3000));
  });

  test('a stream of well-formed stanzas parses the same whatever the chunking, and oversized ones are skipped', () => {
    fc.assert(fc.property(fc.array(stanza, { minLength: 1, maxLength: 6 }).chain((stanzas) => {
      const bytes = Buffer.from(HEADER + stanzas.map((s) => s.toString()).join(' ') + '</stream:stream>');
      return fc.tuple(fc.constant(stanzas.map((s) => s.toString())), chunked(bytes), fc.integer({ min: 64, max: 600 }));
    }), ([expected, chunks, limit]) => {
      const seen = feed(chunks, limit);
      assert.equal(seen.errors, 0);
      assert.equal(seen.ends, 1);
      const small = expected.filter((s) => Buffer.byteLength(s) <= limit);
      assert.deepEqual(seen.stanzas, small.map((s) => parse(s).toString()));
      assert.equal(seen.oversized, expected.length - small.length);
    }), runs(2000));
  });

  test('deep nesting, huge attributes and huge names are skipped and the stream goes on', () => {
    fc.assert(fc.property(
      fc.oneof(
        fc.integer({ min: 70, max: 3000 }).map((depth) => `<iq id='d'>${'<a>'.repeat(depth)}${'</a>'.repeat(depth)}</iq>`),
        fc.integer({ min: 5000, max: 200_000 }).map((size) => `<iq id='h' x='${'v'.repeat(size)}'/>`),
        fc.integer({ min: 5000, max: 200_000 }).map((size) => `<${'n'.repeat(size)}/>`),
        fc.integer({ min: 5000, max: 200_000 }).map((size) => `<message><body>${'b'.repeat(size)}</body></message>`),
      ).chain((big) => chunked(Buffer.from(`${HEADER}${big}<iq id='after'/>`))),
      (chunks) => {
        const seen = feed(chunks, 4096);
        assert.equal(seen.errors, 0);
        assert.equal(seen.oversized, 1);
        assert.deepEqual(seen.stanzas, ['<iq id="after"/>']);
      },
    ), runs(300));
  });

  // An iq's attributes in any order and quote style, values with entities and multi-byte
  // characters, a pad of any size among them: what is reported of its opening tag follows from the
  // sizes alone (whole when it fitted the limit, else id, type, from and to, each that still fits
  // in OPENING_TAG_KEPT_BYTES as ` name='value'` after `<iq`), whatever the chunking.
  interface Attribute { name: string; value: string; quote: string }
  const value = fc.string({ unit: fc.constantFrom('a', 'é', '日', '😀', '&', '<', '>', '"', "'", ' '), maxLength: 30 });
  const attributes: fc.Arbitrary<Attribute[]> = fc.tuple(
    fc.shuffledSubarray(['id', 'type', 'from', 'to', 'x-a', 'x-b']).chain((names) => fc.array(fc.tuple(value, fc.constantFrom("'", '"')), { minLength: names.length, maxLength: names.length })
      .map((values) => values.map(([text, quote], i) => ({ name: names[i], value: text, quote })))),
    fc.nat({ max: 6 }),
    fc.integer({ min: 0, max: 3 * OPENING_TAG_KEPT_BYTES }),
  ).map(([named, at, padBytes]) => named.toSpliced(at, 0, { name: 'pad', value: 'p'.repeat(padBytes), quote: "'" }));

  test('an opening tag over the limit is reported with the id, type, from and to that fit the bytes kept, whatever the chunking', () => {
    fc.assert(fc.property(fc.tuple(fc.integer({ min: 64, max: 2 * OPENING_TAG_KEPT_BYTES }), attributes).chain(([limit, list]) => {
      const written = list.map(({ name: n, value: text, quote }) => ` ${n}=${quote}${escapeXML(text)}${quote}`);
      const tag = `<iq${written.join('')}>`;
      const stanza = `${tag}${'<ping/>'.repeat(limit)}</iq>`;
      const whole = Buffer.byteLength(tag) <= limit;
      let kept = '<iq'.length;
      const fits = (i: number) => {
        if (whole) return true;
        if (!['id', 'type', 'from', 'to'].includes(list[i].name) || kept + Buffer.byteLength(written[i]) > OPENING_TAG_KEPT_BYTES) return false;
        kept += Buffer.byteLength(written[i]);
        return true;
      };
      const expected: Omit<OversizedStanza, 'bytes'> = {
        name: 'iq',
        attrs: Object.fromEntries(list.filter((_, i) => fits(i)).map(({ name: n, value: text }) => [n, text])),
        partial: !whole,
        reason: 'size',
      };
      const bytes = Buffer.from(`${HEADER}${stanza}<iq id='after'/>`);
      return fc.tuple(fc.constant({ limit, expected, stanzaBytes: Buffer.byteLength(stanza) }), chunked(bytes));
    }), ([{ limit, expected, stanzaBytes }, chunks]) => {
      const reports: OversizedStanza[] = [];
      const after: string[] = [];
      const parser = new StreamParser({
        streamStart: () => {},
        stanza: (element) => after.push(element.attrs.id),
        oversized: (report) => reports.push(report),
        streamEnd: () => {},
        error: (error) => assert.fail(error.message),
      }, limit);
      for (const chunk of chunks) parser.write(chunk);
      assert.equal(reports.length, 1);
      const { bytes, ...report } = reports[0];
      assert.deepEqual(report, expected);
      assert.equal(bytes, stanzaBytes);
      assert.deepEqual(after, ['after']);
    }), runs(1000));
  });
});

describe('fuzz: iq handlers', () => {
  let store: SqliteStore;
  let router: IqRouter;
  const service = 'push.example.org';

  before(() => {
    store = new SqliteStore(':memory:');
    const apps = directoryOf({ 'monal-prod': scriptedProvider(), conversations: scriptedProvider(), ios: scriptedProvider() }, ['monal-prod']);
    const registrations = new Registrations(store, apps, Date.now, { maxPerJid: 20 });
    const dispatcher = new Dispatcher(store, apps, silentLogger, { timeoutMs: 500, retryMaxAttempts: 0, retryMaxDelayMs: 1000 });
    const commands = new AdHocCommands({ registrations, p2: { fcmApp: 'conversations', apnsApp: 'ios' }, logger: silentLogger, perJidPerMinute: 1000, perDomainPerMinute: 1000 });
    router = new IqRouter(silentLogger)
      .on('set', 'pubsub', NS.pubsub, publishHandler(dispatcher))
      .on('set', 'command', NS.commands, commands.execute);
  });

  after(async () => {
    await store.close();
  });

  const value = fc.oneof(fc.string({ maxLength: 30 }), fc.constantFrom('monal-prod', 'conversations', 'room@conference.example', 'tok', ''), fc.string({ maxLength: 300 }));
  const field = fc.tuple(fc.constantFrom('type', 'node', 'token', 'device-id', 'android-id', 'muc', 'secret', 'FORM_TYPE', 'pushModule', 'x'), fc.array(value, { maxLength: 2 }));
  const form = fc.tuple(fc.constantFrom('submit', 'form', 'cancel', 'result', undefined), fc.array(field, { maxLength: 6 })).map(([type, fields]) => {
    const x = new Element('x', { xmlns: NS.dataForms, type });
    for (const [name, values] of fields) {
      const f = x.c('field', { var: name });
      for (const v of values) f.c('value').t(v);
    }
    return x;
  });
  const from = fc.oneof(fc.constantFrom('romeo@montague.example/phone', 'example.com', 'juliet@capulet.example', ''), fc.string({ maxLength: 40 }));
  const command = fc.tuple(fc.constantFrom(...Object.values(COMMAND_NODES), 'nope', undefined), fc.constantFrom('execute', 'complete', 'next', 'prev', 'cancel', 'bogus', undefined), fc.option(form))
    .map(([node, action, x]) => {
      const element = new Element('command', { xmlns: NS.commands, node, action });
      if (x) element.cnode(x);
      return element;
    });
  const publish = fc.tuple(fc.option(fc.string({ maxLength: 40 })), fc.option(form), fc.option(form), fc.boolean())
    .map(([node, summary, options, withItem]) => {
      const pubsub = new Element('pubsub', { xmlns: NS.pubsub });
      const publishElement = pubsub.c('publish', node === null ? {} : { node });
      if (withItem) {
        const notification = publishElement.c('item').c('notification', { xmlns: NS.push });
        if (summary) notification.cnode(summary);
      }
      if (options) pubsub.c('publish-options').cnode(options);
      return pubsub;
    });

  test('every iq get/set with an id gets exactly one answer, of the right id, and nothing throws', async () => {
    await fc.assert(fc.asyncProperty(from, fc.oneof(command, publish), fc.constantFrom('set', 'get'), fc.string({ minLength: 1, maxLength: 8 }), async (sender, payload, type, id) => {
      const iq = new Element('iq', { type, id, from: sender, to: service });
      iq.cnode(payload);
      const reply = await router.handle(parse(iq.toString()));
      assert.ok(reply, 'an answer');
      assert.equal(reply.attrs.id, id);
      assert.ok(reply.attrs.type === 'result' || reply.attrs.type === 'error');
      if (reply.attrs.type === 'error') assert.ok(reply.getChild('error')?.attrs.type);
    }), runs(2000));
  });
});

describe('fuzz: HTTP API', () => {
  let store: SqliteStore;
  let http: HttpServer;
  let port: number;

  before(async () => {
    store = new SqliteStore(':memory:');
    const apps = directoryOf({ apns: scriptedProvider(), fcm: scriptedProvider() });
    http = new HttpServer(silentLogger, 4096);
    const dispatcher = new Dispatcher(store, apps, silentLogger, { timeoutMs: 500, retryMaxAttempts: 0, retryMaxDelayMs: 1000 });
    addV1Routes(http, {
      registrations: new Registrations(store, apps), dispatcher, store,
      health: async () => ({ status: 'running' }), debug: true, adminToken: 'a'.repeat(40), registrationsPerIpPerMinute: 600, logger: silentLogger,
    });
    port = (await http.listen('127.0.0.1', 0)).port;
  });

  after(async () => {
    await http.close();
    await store.close();
  });

  const path = fc.oneof(
    fc.constantFrom('/push_appserver/v1/register', '/push_appserver/v1/unregister', '/push_appserver/v1/push', '/push_appserver/v1/health', '/push_appserver/v1/settings', '/push_appserver/v1/settings/%E0%A4%A', '/'),
    fc.string({ maxLength: 40 }).map((s) => `/push_appserver/v1/${encodeURIComponent(s)}`),
    fc.webPath(),
  );
  const body = fc.oneof(
    fc.dictionary(fc.constantFrom('type', 'node', 'token', 'secret', 'jid', 'x'), fc.string({ maxLength: 60 })).map((fields) => new URLSearchParams(fields).toString()),
    fc.string({ maxLength: 500 }),
    fc.uint8Array({ maxLength: 600 }).map((bytes) => Buffer.from(bytes).toString('latin1')),
  );
  const headers = fc.record({
    'content-type': fc.constantFrom('application/x-www-form-urlencoded', 'text/plain', 'application/json', 'multipart/form-data; boundary=x'),
    authorization: fc.constantFrom('', 'Bearer x', `Bearer ${'a'.repeat(40)}`, 'Basic Zm9vOmJhcg=='),
    accept: fc.constantFrom('*/*', 'application/json', 'text/html'),
    'x-forwarded-for': fc.constantFrom('1.2.3.4', 'not-an-ip', '::1, 10.0.0.1'),
  }, { requiredKeys: [] });

  test('random methods, paths, headers and bodies are answered without a 5xx, and the server keeps serving', async () => {
    await fc.assert(fc.asyncProperty(fc.constantFrom('GET', 'POST', 'PUT', 'DELETE', 'HEAD', 'OPTIONS', 'PATCH'), path, headers, body, async (method, target, extra, payload) => {
      const cleanHeaders = Object.fromEntries(Object.entries(extra).filter(([, v]) => v !== ''));
      const response = await fetch(`http://127.0.0.1:${port}${target}`, {
        method,
        headers: cleanHeaders,
        body: method === 'GET' || method === 'HEAD' ? undefined : payload,
      });
      await response.arrayBuffer();
      assert.ok(response.status < 500, `${method} ${target} → ${response.status}`);
    }), runs(400));
    assert.equal((await fetch(`http://127.0.0.1:${port}/push_appserver/v1/health`)).status, 200);
  });
});

describe('fuzz: configuration loader', () => {
  const key = fc.oneof(fc.constantFrom('xmpp', 'http', 'apps', 'registration', 'push', 'storage', 'log', 'dialects', 'provider', 'debug', 'admin_token', 'allowed_domains', 'allowed_ports', 'port', 'expire_days', 'max_stanza_bytes', 'apns', 'p2'), fc.stringMatching(/^[a-z_]{1,10}$/));
  const scalar = fc.oneof(fc.integer({ min: -5, max: 70_000 }), fc.boolean(), fc.string({ maxLength: 40 }), fc.array(fc.oneof(fc.string({ maxLength: 10 }), fc.integer()), { maxLength: 3 }));
  const table = fc.letrec<{ t: Record<string, unknown> }>((tie) => ({
    t: fc.dictionary(key, fc.oneof({ depthSize: 'small' }, scalar, tie('t')), { maxKeys: 5 }),
  })).t;
  const toml = (value: unknown): string => JSON.stringify(value);
  function render(doc: Record<string, unknown>, prefix = ''): string {
    const plain = Object.entries(doc).filter(([, v]) => typeof v !== 'object' || Array.isArray(v));
    const tables = Object.entries(doc).filter(([, v]) => typeof v === 'object' && !Array.isArray(v));
    let out = plain.map(([k, v]) => `${k} = ${toml(v)}\n`).join('');
    for (const [k, v] of tables) out += `[${prefix}${k}]\n${render(v as Record<string, unknown>, `${prefix}${k}.`)}`;
    return out;
  }

  test('random TOML documents are accepted or refused with a ConfigError naming a key, never anything else', () => {
    fc.assert(fc.property(fc.oneof(table.map((doc) => render(doc)), fc.string({ maxLength: 200 })), (source) => {
      try {
        parseAppSettings(readConfig(parseDocument(source, 'fuzz.toml'), 'fuzz.toml'));
      } catch (error) {
        assert.ok(error instanceof ConfigError, `${(error as Error).stack}\n--- document:\n${source}`);
        assert.ok(error.key !== '');
      }
    }), runs(3000));
  });
});

describe('fuzz: the component stream, end to end', () => {
  // A scripted XMPP server on loopback and a real XmppService (stream parser, component, router):
  // iqs of every kind, some oversized, deeply nested or with an opening tag over the limit, in random
  // chunkings on ONE stream. Every iq get/set with an id (and, when its opening tag is over the
  // limit, with id and from short enough to be kept of it) is answered exactly once (an oversized
  // one with an error); nothing else is; the stream never drops.
  const LIMIT = 2048;
  let server: Server;
  let service: XmppService;
  let store: SqliteStore;
  let peer: Socket;
  let connections = 0;
  const replies = new Map<string, number>();

  before(async () => {
    let handshaken!: () => void;
    const online = new Promise<void>((resolve) => { handshaken = resolve; });
    server = createServer((socket) => {
      connections += 1;
      peer = socket;
      socket.on('error', () => {});
      const reader = new StreamParser({
        streamStart: () => {
          socket.write(`<?xml version='1.0'?><stream:stream xmlns='jabber:component:accept' xmlns:stream='http://etherx.jabber.org/streams' id='fz' from='push.fuzz'>`);
        },
        stanza: (element) => {
          if (element.name === 'handshake') {
            socket.write('<handshake/>');
            handshaken();
          } else if (element.name === 'iq') {
            const id = String(element.attrs.id);
            replies.set(id, (replies.get(id) ?? 0) + 1);
          }
        },
        oversized: () => assert.fail('the component sent a reply over the limit'),
        streamEnd: () => {},
        error: (error) => assert.fail(`the component sent XML that is not well-formed: ${error.message}`),
      }, 1 << 20);
      socket.on('data', (chunk: Buffer) => reader.write(chunk));
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    store = new SqliteStore(':memory:');
    const apps = directoryOf({ apns: scriptedProvider() });
    const dispatcher = new Dispatcher(store, apps, silentLogger, { timeoutMs: 500, retryMaxAttempts: 0, retryMaxDelayMs: 1000 });
    service = new XmppService({
      jid: 'push.fuzz', host: '127.0.0.1', port: (server.address() as AddressInfo).port, secret: 's',
      reconnectInitialMs: 50, reconnectMaxMs: 100, authFailureRetryMs: 1000, maxStanzaBytes: LIMIT,
    }, dispatcher, silentLogger);
    service.start();
    await online;
    const deadline = Date.now() + 10_000;
    while (service.component.state !== 'online') {
      assert.ok(Date.now() < deadline, 'the component came online');
      await new Promise((resolve) => setTimeout(resolve, 5));
    }
  });

  after(async () => {
    await service?.stop();
    server?.close();
    await store?.close();
  });

  async function until(condition: () => boolean, what: string): Promise<void> {
    const deadline = Date.now() + 10_000;
    while (!condition()) {
      if (Date.now() > deadline) assert.fail(`timed out waiting for ${what}`);
      await new Promise((resolve) => setTimeout(resolve, 2));
    }
  }

  type Kind = 'ping' | 'publish' | 'unknown' | 'two-payloads' | 'big-body' | 'deep' | 'huge-tag' | 'huge-tag-late-id' | 'huge-tag-long-id' | 'huge-tag-long-from' | 'result' | 'no-id' | 'message';
  const kind = fc.constantFrom<Kind>('ping', 'publish', 'unknown', 'two-payloads', 'big-body', 'deep', 'huge-tag', 'huge-tag-late-id', 'huge-tag-long-id', 'huge-tag-long-from', 'result', 'no-id', 'message');
  const size = fc.integer({ min: LIMIT + 1, max: 40_000 });
  const item = fc.tuple(kind, fc.constantFrom('get', 'set'), size);

  function render(id: string, [what, type, bytes]: [Kind, string, number]): { xml: string; answered: boolean } {
    const to = `from='x@remote.example/r' to='push.fuzz'`;
    switch (what) {
      case 'ping': return { xml: `<iq type='${type}' id='${id}' ${to}><ping xmlns='urn:xmpp:ping'/></iq>`, answered: true };
      case 'publish': return { xml: `<iq type='set' id='${id}' ${to}><pubsub xmlns='${NS.pubsub}'><publish node='n-${id}'><item><notification xmlns='${NS.push}'/></item></publish></pubsub></iq>`, answered: true };
      case 'unknown': return { xml: `<iq type='${type}' id='${id}' ${to}><q xmlns='urn:example:nope'/></iq>`, answered: true };
      case 'two-payloads': return { xml: `<iq type='${type}' id='${id}' ${to}><a xmlns='urn:a'/><b xmlns='urn:b'/></iq>`, answered: true };
      case 'big-body': return { xml: `<iq type='${type}' id='${id}' ${to}><q xmlns='urn:big'>${'x'.repeat(bytes)}</q></iq>`, answered: true };
      case 'deep': return { xml: `<iq type='${type}' id='${id}' ${to}>${'<d>'.repeat(100)}${'</d>'.repeat(100)}</iq>`, answered: true };
      // An opening tag alone over the limit: answered when its id and from fit the bytes kept of it.
      case 'huge-tag': return { xml: `<iq type='${type}' id='${id}' ${to} pad='${'p'.repeat(bytes)}'><ping xmlns='urn:xmpp:ping'/></iq>`, answered: true };
      case 'huge-tag-late-id': return { xml: `<iq pad='${'p'.repeat(bytes)}' type='${type}' id='${id}' ${to}><ping xmlns='urn:xmpp:ping'/></iq>`, answered: true };
      case 'huge-tag-long-id': return { xml: `<iq type='${type}' id='${id}${'i'.repeat(OPENING_TAG_KEPT_BYTES)}' ${to} pad='${'p'.repeat(bytes)}'/>`, answered: false };
      case 'huge-tag-long-from': return { xml: `<iq type='${type}' id='${id}' from='${'f'.repeat(bytes + OPENING_TAG_KEPT_BYTES)}' to='push.fuzz'/>`, answered: false };
      case 'result': return { xml: `<iq type='result' id='${id}' ${to}/>`, answered: false };
      case 'no-id': return { xml: `<iq type='${type}' ${to}><ping xmlns='urn:xmpp:ping'/></iq>`, answered: false };
      case 'message': return { xml: `<message id='${id}' ${to}><body>hi</body></message>`, answered: false };
    }
  }

  let run = 0;
  test('every iq get/set with an id is answered exactly once, nothing else is, and the stream stays up', async () => {
    await fc.assert(fc.asyncProperty(fc.array(item, { minLength: 1, maxLength: 8 }).chain((items) => {
      run += 1;
      const rendered = items.map((entry, i) => render(`r${run}-${i}`, entry));
      const ids = items.map((_, i) => `r${run}-${i}`);
      const bytes = Buffer.from(rendered.map((r) => r.xml).join(' '));
      return fc.tuple(fc.constant(ids), fc.constant(rendered.map((r) => r.answered)), chunked(bytes));
    }), async ([ids, answered, chunks]) => {
      for (const chunk of chunks) peer.write(chunk);
      const expected = ids.filter((_, i) => answered[i]);
      await until(() => expected.every((id) => replies.has(id)), `answers to ${expected.join(', ')}`);
      // A later iq on the same stream: a late second answer to any of them would come before its own.
      const sentinel = `${ids[0]}-sentinel`;
      peer.write(`<iq type='get' id='${sentinel}' to='push.fuzz'><ping xmlns='urn:xmpp:ping'/></iq>`);
      await until(() => replies.has(sentinel), 'the answer to the sentinel ping');
      for (const [i, id] of ids.entries()) assert.equal(replies.get(id) ?? 0, answered[i] ? 1 : 0, `answers to ${id}`);
      assert.equal(replies.get(sentinel), 1);
      assert.equal(service.component.state, 'online');
      assert.equal(connections, 1, 'no reconnect');
      assert.equal(service.component.pendingBytes, 0, 'nothing piles up in the outbox');
    }), runs(100));
  });
});
