/**
 * The bench's bare forwarder (`--baseline`): the least any app server must do per push, as its own
 * process. It attaches as an XEP-0114 component, and for each publish finds the node's device token
 * in a Map, makes one HTTP/2 request to the APNS mock with one reused JWT, and answers `result`
 * (or a `wait` error for anything but 200). No store, no secret check, no coalescing, no retries,
 * no logging, no metrics: what push-appserver does beyond this is what `ratio_to_baseline` prices.
 *
 *   node bench/baseline-forwarder.ts CONFIG.json     (written by bench/run.ts)
 */
import { createHash, createPrivateKey, sign } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { connect as http2Connect, constants } from 'node:http2';
import { connect as netConnect } from 'node:net';

interface ForwarderConfig {
  xmppPort: number;
  componentJid: string;
  secret: string;
  origin: string;
  caFile: string;
  keyFile: string;
  keyId: string;
  teamId: string;
  topic: string;
  /** node → device token, what a store lookup would have given. */
  tokens: Record<string, string>;
}

const config = JSON.parse(readFileSync(process.argv[2], 'utf8')) as ForwarderConfig;
const tokens = new Map(Object.entries(config.tokens));

const base64url = (data: Buffer | string) => Buffer.from(data).toString('base64url');
const header = base64url(JSON.stringify({ alg: 'ES256', kid: config.keyId }));
const claims = base64url(JSON.stringify({ iss: config.teamId, iat: Math.floor(Date.now() / 1000) }));
const signature = sign('sha256', Buffer.from(`${header}.${claims}`), { key: createPrivateKey(readFileSync(config.keyFile)), dsaEncoding: 'ieee-p1363' });
const authorization = `bearer ${header}.${claims}.${base64url(signature)}`;
const body = Buffer.from('{"aps":{"alert":{"body":"New Message"},"mutable-content":1}}');

const session = http2Connect(config.origin, { ca: readFileSync(config.caFile) });
session.on('error', (error) => {
  process.stderr.write(`baseline: HTTP/2 session error: ${error.message}\n`);
  process.exit(1);
});

const socket = netConnect({ host: '127.0.0.1', port: config.xmppPort });
socket.setEncoding('utf8');
socket.setNoDelay(true);
let outgoing: string[] = [];
let flushScheduled = false;
function send(stanza: string): void {
  outgoing.push(stanza);
  if (flushScheduled) return;
  flushScheduled = true;
  queueMicrotask(() => {
    flushScheduled = false;
    const data = outgoing.join('');
    outgoing = [];
    socket.write(data);
  });
}

function attribute(text: string, name: string, from = 0): string | undefined {
  let at = text.indexOf(` ${name}=`, from);
  if (at === -1) return undefined;
  at += name.length + 2;
  const end = text.indexOf(text[at], at + 1);
  return end === -1 ? undefined : text.slice(at + 1, end);
}

function answer(iq: string, ok: boolean): void {
  const id = attribute(iq, 'id') ?? '';
  const to = attribute(iq, 'from') ?? '';
  send(ok
    ? `<iq type='result' from='${config.componentJid}' to='${to}' id='${id}'/>`
    : `<iq type='error' from='${config.componentJid}' to='${to}' id='${id}'><error type='wait'><resource-constraint xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>`);
}

function forward(iq: string): void {
  const node = attribute(iq, 'node', iq.indexOf('<publish'));
  const token = node === undefined ? undefined : tokens.get(node);
  if (token === undefined) return answer(iq, false);
  const stream = session.request([
    constants.HTTP2_HEADER_METHOD, 'POST',
    constants.HTTP2_HEADER_PATH, `/3/device/${token}`,
    'apns-topic', config.topic,
    'apns-push-type', 'alert',
    'apns-priority', '10',
    'authorization', authorization,
  ] as unknown as Record<string, string>);
  let status = 0;
  stream.on('response', (headers) => { status = Number(headers[constants.HTTP2_HEADER_STATUS]); });
  stream.on('error', () => {});
  stream.on('data', () => {});
  stream.on('close', () => answer(iq, status === 200));
  stream.end(body);
}

let buffer = '';
let handshakeSent = false;
let online = false;
socket.on('data', (chunk: string) => {
  buffer += chunk;
  if (!online) {
    const streamAt = buffer.indexOf('<stream:stream');
    if (streamAt === -1 || buffer.indexOf('>', streamAt) === -1) return;
    if (!handshakeSent) {
      handshakeSent = true;
      const id = attribute(buffer, 'id', streamAt) ?? '';
      socket.write(`<handshake>${createHash('sha1').update(id + config.secret).digest('hex')}</handshake>`);
    }
    const accepted = buffer.indexOf('<handshake/>');
    if (accepted === -1) return;
    online = true;
    buffer = buffer.slice(accepted + '<handshake/>'.length);
  }
  let pos = 0;
  for (;;) {
    const start = buffer.indexOf('<iq', pos);
    if (start === -1) break;
    const end = buffer.indexOf('</iq>', start);
    if (end === -1) {
      pos = start;
      break;
    }
    forward(buffer.slice(start, end + 5));
    pos = end + 5;
  }
  buffer = buffer.slice(pos);
});
socket.on('connect', () => {
  socket.write(`<?xml version='1.0'?><stream:stream xmlns='jabber:component:accept' xmlns:stream='http://etherx.jabber.org/streams' to='${config.componentJid}'>`);
});
socket.on('close', () => process.exit(0));
socket.on('error', (error) => {
  process.stderr.write(`baseline: XMPP connection error: ${error.message}\n`);
  process.exit(1);
});
process.on('SIGTERM', () => {
  session.close();
  socket.end();
  process.exit(0);
});
