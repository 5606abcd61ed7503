import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { Element } from 'ltx';
import { StreamParser } from '../../src/xmpp/stream-parser.ts';
import { handshakeDigest } from '../../src/xmpp/component.ts';

function collect(maxChars = 10_000) {
  const events = { starts: [] as Record<string, string>[], stanzas: [] as Element[], ends: 0, errors: [] as Error[] };
  const parser = new StreamParser({
    streamStart: (attrs) => events.starts.push(attrs),
    stanza: (element) => events.stanzas.push(element),
    streamEnd: () => { events.ends += 1; },
    error: (error) => events.errors.push(error),
  }, maxChars);
  return { parser, events };
}

test('stanzas split across chunks are reassembled', () => {
  const { parser, events } = collect();
  const text = `<?xml version='1.0'?><stream:stream xmlns='jabber:component:accept' xmlns:stream='http://etherx.jabber.org/streams' id='abc' from='push.localhost'><handshake/><iq type='get' id='1'><ping xmlns='urn:xmpp:ping'/></iq> </stream:stream>`;
  for (let i = 0; i < text.length; i += 7) parser.write(text.slice(i, i + 7));
  assert.equal(events.starts[0].id, 'abc');
  assert.deepEqual(events.stanzas.map((s) => s.name), ['handshake', 'iq']);
  assert.equal(events.stanzas[1].getChild('ping')?.getNS(), 'urn:xmpp:ping');
  assert.equal(events.ends, 1);
  assert.equal(events.errors.length, 0);
});

test('a stanza larger than the limit is an error, not unbounded memory', () => {
  const { parser, events } = collect(1000);
  parser.write(`<stream:stream xmlns:stream='http://etherx.jabber.org/streams' id='x'><message><body>`);
  parser.write('x'.repeat(2000));
  assert.equal(events.errors.length, 1);
});

test('an illegal entity is a stream error', () => {
  const { parser, events } = collect();
  parser.write(`<stream:stream xmlns:stream='http://etherx.jabber.org/streams' id='x'><message><body>&bogus;</body></message>`);
  assert.equal(events.errors.length, 1);
});

test('mismatched end tags are a stream error', () => {
  const { parser, events } = collect();
  parser.write(`<stream:stream xmlns:stream='http://etherx.jabber.org/streams' id='x'><message><body></message>`);
  assert.equal(events.errors.length, 1);
});

test('the XEP-0114 handshake is the hex SHA-1 of stream id followed by secret', () => {
  // FIPS 180 test vector: SHA-1("abc").
  assert.equal(handshakeDigest('a', 'bc'), 'a9993e364706816aba3e25717850c26c9cd0d89d');
});
