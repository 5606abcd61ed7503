/**
 * The benchmark's yardstick (`--baseline`, issue 13): the least an XEP-0114 component must do to turn
 * an XEP-0357 publish into an APNS request, written for speed and nothing else. Same protocol work
 * as push-appserver on the hot path, none of its safety:
 * - the component connection and SHA-1 handshake, then every stanza parsed by ltx (the XML library
 *   push-appserver uses), here in one streaming pass over the socket;
 * - per publish: the node's device token from an in-memory map (filled from a file at start), one
 *   HTTP/2 request over TLS to the same APNS mock (same headers, a JSON payload, the ES256 provider
 *   token signed once), and an iq `result` once APNS answered 200;
 * - replies made in one turn of the event loop leave in one socket write, and the socket is read at
 *   most once per `readCoalesceMs` while publishes keep coming, as push-appserver does.
 * No store, no secret check, no limits, no timeouts, no retries, no metrics, no logs.
 *
 *   node bench/baseline-forwarder.ts --config FILE   (JSON: see ForwarderConfig)
 * Prints `ready` on stdout once the component is online.
 */
import { createHash, createPrivateKey, sign } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { connect as connectHttp2, type ClientHttp2Session } from 'node:http2';
import { connect as connectTcp } from 'node:net';
import { StringDecoder } from 'node:string_decoder';
import { Element, Parser, escapeXML } from 'ltx';

export interface ForwarderConfig {
  componentJid: string;
  xmppPort: number;
  secret: string;
  origin: string;
  caFile: string;
  keyFile: string;
  keyId: string;
  teamId: string;
  topic: string;
  /** Lines of `node<TAB>token`. */
  targetsFile: string;
  /** Like push-appserver's xmpp.read_coalesce_ms: after a read, leave the socket unread this long. */
  readCoalesceMs: number;
}

const configFile = process.argv[process.argv.indexOf('--config') + 1];
const config = JSON.parse(readFileSync(configFile, 'utf8')) as ForwarderConfig;

const tokenOf = new Map<string, string>();
for (const line of readFileSync(config.targetsFile, 'utf8').split('\n')) {
  const tab = line.indexOf('\t');
  if (tab > 0) tokenOf.set(line.slice(0, tab), line.slice(tab + 1));
}

const b64 = (value: string | Buffer) => Buffer.from(value).toString('base64url');
const signingInput = `${b64(JSON.stringify({ alg: 'ES256', kid: config.keyId }))}.${b64(JSON.stringify({ iss: config.teamId, iat: Math.floor(Date.now() / 1000) }))}`;
const jwt = `${signingInput}.${b64(sign('sha256', Buffer.from(signingInput), { key: createPrivateKey(readFileSync(config.keyFile)), dsaEncoding: 'ieee-p1363' }))}`;
const authorization = `bearer ${jwt}`;
const payload = JSON.stringify({ aps: { alert: { body: 'New Message' } } });
const contentLength = String(Buffer.byteLength(payload));

const apns: ClientHttp2Session = connectHttp2(config.origin, { ca: readFileSync(config.caFile) });
apns.on('error', (error) => { process.stderr.write(`baseline: HTTP/2 session error: ${error.message}\n`); process.exit(1); });

const decoder = new StringDecoder('utf8');
const readBuffer = Buffer.allocUnsafe(64 * 1024);
const onRead = (bytes: number): boolean => {
  sax.write(decoder.write(readBuffer.subarray(0, bytes)));
  if (config.readCoalesceMs === 0 || !online || bytes === readBuffer.length) return true;
  setTimeout(() => socket.resume(), config.readCoalesceMs);
  return false;
};
const socket = connectTcp({ host: '127.0.0.1', port: config.xmppPort, onread: { buffer: readBuffer, callback: onRead } });
socket.setNoDelay(true);
socket.on('error', (error) => { process.stderr.write(`baseline: XMPP socket error: ${error.message}\n`); process.exit(1); });
socket.on('close', () => process.exit(0));
socket.on('connect', () => {
  socket.write(`<?xml version='1.0'?><stream:stream xmlns='jabber:component:accept' xmlns:stream='http://etherx.jabber.org/streams' to='${config.componentJid}'>`);
});

let outbox = '';
const flush = () => {
  socket.write(outbox);
  outbox = '';
};
const reply = (stanza: string) => {
  if (outbox === '') setImmediate(flush);
  outbox += stanza;
};
const answer = (iq: Element, error?: string) => {
  const head = `<iq type='${error ? 'error' : 'result'}' id='${escapeXML(iq.attrs.id ?? '')}' from='${escapeXML(iq.attrs.to ?? '')}' to='${escapeXML(iq.attrs.from ?? '')}'`;
  reply(error ? `${head}>${error}</iq>` : `${head}/>`);
};
const stanzaError = (type: string, condition: string) => `<error type='${type}'><${condition} xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error>`;

function forward(iq: Element): void {
  const node = iq.getChild('pubsub')?.getChild('publish')?.attrs.node;
  const token = node === undefined ? undefined : tokenOf.get(node);
  if (token === undefined) return answer(iq, stanzaError('cancel', 'item-not-found'));
  const stream = apns.request([
    ':method', 'POST', ':path', `/3/device/${token}`,
    'apns-topic', config.topic, 'apns-push-type', 'alert', 'apns-priority', '10',
    'content-type', 'application/json',
    'authorization', authorization, 'content-length', contentLength,
  ]);
  let status = 0;
  stream.on('response', (headers) => { status = Number(headers[':status']); });
  stream.on('data', () => {});
  stream.on('error', () => {});
  stream.on('close', () => answer(iq, status === 200 ? undefined : stanzaError('wait', 'internal-server-error')));
  stream.end(payload);
}

// One SAX pass over the stream: depth 1 is inside <stream:stream>, each element closed there is a stanza.
const sax = new Parser.prototype.DefaultParser();
let depth = 0;
let current: Element | undefined;
let online = false;
sax.on('startElement', (name, attrs) => {
  depth += 1;
  if (depth === 1) {
    socket.write(`<handshake>${createHash('sha1').update(attrs.id + config.secret).digest('hex')}</handshake>`);
    return;
  }
  const element = new Element(name, attrs);
  current = current ? current.cnode(element) : element;
});
sax.on('endElement', () => {
  depth -= 1;
  if (depth === 0 || !current) return;
  const element = current;
  current = element.parent ?? undefined;
  if (depth !== 1) return;
  element.parent = null;
  if (!online) {
    if (element.name === 'handshake') {
      online = true;
      process.stdout.write('ready\n');
    }
    return;
  }
  if (element.name !== 'iq') return;
  if (element.attrs.type === 'set') forward(element);
  // `--via prosody` asks (disco#info) whether the forwarder is attached; any answer says so.
  else if (element.attrs.type === 'get') answer(element);
});
sax.on('text', (text) => { current?.t(text); });
sax.on('error', (error) => { process.stderr.write(`baseline: bad XML: ${error.message}\n`); process.exit(1); });

process.on('SIGTERM', () => {
  apns.close();
  socket.end('</stream:stream>');
  setTimeout(() => process.exit(0), 500).unref();
});
