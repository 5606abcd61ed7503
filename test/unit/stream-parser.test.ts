import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { Element } from 'ltx';
import { MAX_DEPTH, OPENING_TAG_KEPT_BYTES, StreamParser, type OversizedStanza } from '../../src/xmpp/stream-parser.ts';
import { handshakeDigest } from '../../src/xmpp/component.ts';

function collect(maxBytes = 10_000) {
  const events = { starts: [] as Record<string, string>[], stanzas: [] as Element[], oversized: [] as OversizedStanza[], ends: 0, errors: [] as Error[] };
  const parser = new StreamParser({
    streamStart: (attrs) => events.starts.push(attrs),
    stanza: (element) => events.stanzas.push(element),
    oversized: (stanza) => events.oversized.push(stanza),
    streamEnd: () => { events.ends += 1; },
    error: (error) => events.errors.push(error),
  }, maxBytes);
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

const HEADER = `<stream:stream xmlns:stream='http://etherx.jabber.org/streams' id='x'>`;

test('a stanza larger than the limit is skipped without buffering it, and the stream goes on', () => {
  const { parser, events } = collect(1000);
  parser.write(`${HEADER}<iq type='set' id='big' from='a.example' to='push.localhost'><query><body>`);
  for (let i = 0; i < 100; i += 1) parser.write('x'.repeat(2000));
  parser.write(`</body></query></iq><iq type='get' id='next'/>`);
  assert.equal(events.errors.length, 0);
  assert.equal(events.oversized.length, 1);
  assert.equal(events.oversized[0].name, 'iq');
  assert.deepEqual(events.oversized[0].attrs, { type: 'set', id: 'big', from: 'a.example', to: 'push.localhost' });
  assert.ok(events.oversized[0].bytes > 200_000);
  assert.deepEqual(events.stanzas.map((s) => s.attrs.id), ['next']);
});

test('the limit counts the whole stanza even when it arrives in one chunk', () => {
  const { parser, events } = collect(4096);
  parser.write(`${HEADER}<message id='m'><body>${'y'.repeat(20_000)}</body></message><iq id='ok'/>`);
  assert.equal(events.oversized.length, 1);
  assert.equal(events.oversized[0].attrs.id, 'm');
  assert.deepEqual(events.stanzas.map((s) => s.attrs.id), ['ok']);
});

test('the limit counts the opening tag: a huge attribute is skipped and the stream goes on', () => {
  const { parser, events } = collect(4096);
  parser.write(`${HEADER}<iq id='i' x='`);
  for (let i = 0; i < 64; i += 1) parser.write('a'.repeat(65_536));
  parser.write(`'><ping xmlns='urn:xmpp:ping'/></iq><iq id='after'/>`);
  assert.equal(events.errors.length, 0);
  assert.equal(events.oversized.length, 1);
  assert.ok(events.oversized[0].bytes > 64 * 65_536);
  assert.deepEqual(events.stanzas.map((s) => s.attrs.id), ['after']);
});

const PAD = 'p'.repeat(200_000);
function split(bytes: Buffer, size: number): Buffer[] {
  return Array.from({ length: Math.ceil(bytes.length / size) }, (_, i) => bytes.subarray(i * size, (i + 1) * size));
}

/**
 * One stanza fed to a parser with a 4 KB limit (or `limit`) whole, in 64 KB, 1000-byte and 1-byte
 * chunks: its report, which must be the same each time.
 */
function oversizedReport(stanza: string, limit = 4096): Omit<OversizedStanza, 'bytes'> {
  const bytes = Buffer.from(`${HEADER}${stanza}<iq id='after'/>`);
  const reports = [bytes.length, 65_536, 1000, 1].map((size) => {
    const chunks = split(bytes, size);
    const { parser, events } = collect(limit);
    for (const chunk of chunks) parser.write(chunk);
    assert.equal(events.errors.length, 0);
    assert.deepEqual(events.stanzas.map((s) => s.attrs.id), ['after']);
    assert.equal(events.oversized.length, 1);
    const { bytes: skipped, ...report } = events.oversized[0];
    assert.equal(skipped, Buffer.byteLength(stanza), `fed in chunks of ${size}`);
    return report;
  });
  for (const report of reports.slice(1)) assert.deepEqual(report, reports[0]);
  return reports[0];
}

test('an opening tag over the limit is reported with its id, type, from and to only, decoded, in either quote style', () => {
  const report = oversizedReport(`<iq xmlns='jabber:client' type='set' xid='no' id="p&amp;1&#x27;" from='bob@localhost/ph&apos;one' tox="no" to="push.localhost" pad='${PAD}'><ping xmlns='urn:xmpp:ping'/></iq>`);
  assert.deepEqual(report, { name: 'iq', attrs: { type: 'set', id: "p&1'", from: "bob@localhost/ph'one", to: 'push.localhost' }, partial: true, reason: 'size' });
});

test('an id after a 200 KB attribute is reported', () => {
  const report = oversizedReport(`<iq pad='${PAD}' type='get' id='late' from='bob@localhost/phone' to='push.localhost'><ping xmlns='urn:xmpp:ping'/></iq>`);
  assert.deepEqual(report, { name: 'iq', attrs: { type: 'get', id: 'late', from: 'bob@localhost/phone', to: 'push.localhost' }, partial: true, reason: 'size' });
});

test('an id too long for the bytes kept is not reported, the other attributes a reply needs are', () => {
  const report = oversizedReport(`<iq type='get' id='${'i'.repeat(OPENING_TAG_KEPT_BYTES)}' from='bob@localhost' pad='${PAD}'/>`);
  assert.deepEqual(report, { name: 'iq', attrs: { type: 'get', from: 'bob@localhost' }, partial: true, reason: 'size' });
});

// What is kept is `<iq`, then ` from='…'`: 11 bytes and the value.
test('a from that fills the bytes kept to the last byte is reported', () => {
  const from = 'f'.repeat(OPENING_TAG_KEPT_BYTES - 11);
  const report = oversizedReport(`<iq pad='${PAD}' from='${from}' type='set'/>`);
  assert.deepEqual(report, { name: 'iq', attrs: { from }, partial: true, reason: 'size' });
});

test('a from one byte longer than the bytes kept is not reported', () => {
  const report = oversizedReport(`<iq pad='${PAD}' from='${'f'.repeat(OPENING_TAG_KEPT_BYTES - 10)}' type='set'/>`);
  assert.deepEqual(report, { name: 'iq', attrs: { type: 'set' }, partial: true, reason: 'size' });
});

test('an attribute repeated in an opening tag over the limit is kept once, with its first value', () => {
  const report = oversizedReport(`<iq id='first' pad='${PAD}' ${"id='again' ".repeat(1000)}from='bob@localhost'/>`);
  assert.deepEqual(report, { name: 'iq', attrs: { id: 'first', from: 'bob@localhost' }, partial: true, reason: 'size' });
});

test('a name longer than the bytes kept is reported as none', () => {
  const report = oversizedReport(`<${'n'.repeat(200_000)} id='x'/>`);
  assert.deepEqual(report, { name: null, attrs: {}, partial: true, reason: 'size' });
});

/** Bytes the parser's own fields hold: buffers, strings and arrays or objects of them. */
function heldBytes(value: unknown, depth = 0): number {
  if (typeof value === 'string') return value.length;
  if (value instanceof Uint8Array) return value.byteLength;
  if (typeof value !== 'object' || value === null || depth > 3) return 0;
  return Object.values(value).reduce<number>((sum, field) => sum + heldBytes(field, depth + 1), 0);
}

test('skipping an opening tag with a to of 16 MB holds no more of it than the bytes kept', () => {
  const { parser, events } = collect(4096);
  parser.write(`${HEADER}<iq type='set' id='huge' from='bob@localhost' to='`);
  const chunk = Buffer.alloc(65_536, 'p');
  let most = 0;
  for (let i = 0; i < 256; i += 1) {
    parser.write(chunk);
    most = Math.max(most, heldBytes(parser));
  }
  parser.write(`'/>`);
  assert.ok(most <= OPENING_TAG_KEPT_BYTES + 256, `the parser held ${most} bytes`);
  assert.deepEqual(events.oversized[0]?.attrs, { type: 'set', id: 'huge', from: 'bob@localhost' });
});

test('a quoted > or < inside an attribute value does not end the tag', () => {
  const { parser, events } = collect();
  parser.write(`${HEADER}<iq id='a>b' x="'/>"><q/></iq>`);
  assert.equal(events.errors.length, 0);
  assert.equal(events.stanzas[0].attrs.id, 'a>b');
  assert.equal(events.stanzas[0].getChildElements().length, 1);
});

test('nesting deeper than the limit is skipped like an oversized stanza', () => {
  const { parser, events } = collect(1_000_000);
  parser.write(`${HEADER}<iq id='deep'>${'<a>'.repeat(MAX_DEPTH + 10)}${'</a>'.repeat(MAX_DEPTH + 10)}</iq><iq id='fine'/>`);
  assert.equal(events.errors.length, 0);
  assert.equal(events.oversized[0]?.reason, 'depth');
  assert.equal(events.oversized[0]?.attrs.id, 'deep');
  assert.deepEqual(events.stanzas.map((s) => s.attrs.id), ['fine']);
});

test('multi-byte characters are counted in bytes and survive any chunking', () => {
  const text = `${HEADER}<message id='ü'><body>日本語 ✓</body></message>`;
  const bytes = Buffer.from(text);
  const { parser, events } = collect();
  for (let i = 0; i < bytes.length; i += 1) parser.write(bytes.subarray(i, i + 1));
  assert.equal(events.stanzas[0].getChildText('body'), '日本語 ✓');
  assert.equal(events.stanzas[0].attrs.id, 'ü');
});

test('element names with multi-byte characters are matched whatever byte a chunk ends on', () => {
  const bytes = Buffer.from(`${HEADER}<message id='1'><ünïcode-näme a='x'>t</ünïcode-näme ><x:日本 b="y"/></message>`);
  for (let cut = 1; cut < bytes.length; cut += 1) {
    const { parser, events } = collect();
    parser.write(bytes.subarray(0, cut));
    parser.write(bytes.subarray(cut));
    assert.equal(events.errors.length, 0, `cut at byte ${cut}: ${events.errors[0]?.message}`);
    assert.deepEqual(events.stanzas[0].children.map((child) => (child as Element).name), ['ünïcode-näme', 'x:日本'], `cut at byte ${cut}`);
  }
});

test('comments and whitespace between stanzas are not part of any stanza', () => {
  const { parser, events } = collect(100);
  parser.write(`${HEADER}  <!-- ${'c'.repeat(500)} -->\n<iq id='1'/>`);
  assert.equal(events.errors.length, 0);
  assert.deepEqual(events.stanzas.map((s) => s.attrs.id), ['1']);
});

test('a document type declaration ends the stream', () => {
  const { parser, events } = collect();
  parser.write(`<!DOCTYPE x [<!ENTITY a 'b'>]>${HEADER}`);
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

// Regression (fuzz seed 20240610): with a limit smaller than the stream header, the header itself
// was refused and the stream ended. The header has its own bound.
test('a stanza limit smaller than the stream header still lets the stream open', () => {
  const { parser, events } = collect(64);
  parser.write(`<stream:stream xmlns='jabber:component:accept' xmlns:stream='http://etherx.jabber.org/streams' id='fz'><i a='${'x'.repeat(100)}'/><p/>`);
  assert.equal(events.errors.length, 0);
  assert.equal(events.oversized.length, 1);
  assert.deepEqual(events.stanzas.map((s) => s.name), ['p']);
});

test('end tags are matched by their bytes, also for names of the same length seen before', () => {
  const { parser, events } = collect();
  // The first stanza puts <ab> and <abc> among the names seen; the second closes <ac> with </ab>.
  parser.write(`${HEADER}<message><ab/><abc></abc></message><message><ac></ab></message>`);
  assert.equal(events.stanzas.length, 1);
  assert.equal(events.stanzas[0].getChild('abc')?.name, 'abc');
  assert.equal(events.errors.length, 1);
  assert.match(events.errors[0].message, /unexpected <\/ab>, expected <\/ac>/);
});
