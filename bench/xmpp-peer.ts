/**
 * The load generator's XMPP side: it plays the XMPP server that push-appserver attaches to as an
 * XEP-0114 component (listen, read the component's stream header, answer with a stream id, verify
 * the handshake `hex(SHA-1(id + secret))`, answer `<handshake/>`), then sends XEP-0357 §5 publishes
 * and matches the iq results and errors by id.
 *
 * The reading side is a small scanner rather than a full XML parser on purpose: the generator must
 * stay cheap next to the server it measures, and it only needs each top-level element's name,
 * `id`/`type` and, for errors, the RFC 6120 §8.3 error type and condition.
 */
import { createHash, randomBytes } from 'node:crypto';
import { createServer, type Server, type Socket } from 'node:net';

export interface PublishTarget {
  node: string;
  secret: string;
}

export interface IqReply {
  id: string;
  ok: boolean;
  /** `iq-error:<type>/<condition>` for errors. */
  error?: string;
  text?: string;
}

const NS_STREAMS = 'http://etherx.jabber.org/streams';

function escapeAttr(value: string): string {
  return /[&<>"']/.test(value)
    ? value.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;').replace(/'/g, '&apos;')
    : value;
}

const escapeText = escapeAttr;

/** What Prosody's mod_cloud_notify sends for an important stanza (dummy body, message count). */
export function publishStanza(id: string, from: string, to: string, target: PublishTarget): string {
  return `<iq type='set' from='${from}' to='${to}' id='${id}'><pubsub xmlns='http://jabber.org/protocol/pubsub'>`
    + `<publish node='${escapeAttr(target.node)}'><item><notification xmlns='urn:xmpp:push:0'><x xmlns='jabber:x:data' type='form'>`
    + `<field var='FORM_TYPE'><value>urn:xmpp:push:summary</value></field>`
    + `<field var='message-count'><value>1</value></field>`
    + `<field var='last-message-body'><value>New Message!</value></field>`
    + `</x></notification></item></publish>`
    + `<publish-options><x xmlns='jabber:x:data' type='submit'>`
    + `<field var='FORM_TYPE'><value>http://jabber.org/protocol/pubsub#publish-options</value></field>`
    + `<field var='secret'><value>${escapeText(target.secret)}</value></field>`
    + `</x></publish-options></pubsub></iq>`;
}

/** The value of one attribute in an opening tag (either quote style), or undefined. */
export function attribute(tag: string, name: string): string | undefined {
  let at = tag.indexOf(` ${name}=`);
  if (at === -1) return undefined;
  at += name.length + 2;
  const quote = tag[at];
  const end = tag.indexOf(quote, at + 1);
  return end === -1 ? undefined : tag.slice(at + 1, end);
}

const ERROR_CONDITION = /<error\b[^>]*\btype=['"]([a-z]+)['"][^>]*>\s*<([a-z-]+)/;
const ERROR_TEXT = /<text\b[^>]*>([^<]*)<\/text>/;

/** An iq `result` or `error` (the reply to a publish or a probe); undefined for anything else. */
export function iqReplyOf(openTag: string, data: string, contentStart: number, end: number): IqReply | undefined {
  const type = attribute(openTag, 'type');
  const id = attribute(openTag, 'id');
  if (id === undefined || (type !== 'result' && type !== 'error')) return undefined;
  if (type === 'result') return { id, ok: true };
  const body = data.slice(contentStart, end);
  const condition = ERROR_CONDITION.exec(body);
  const text = ERROR_TEXT.exec(body);
  return { id, ok: false, error: condition ? `iq-error:${condition[1]}/${condition[2]}` : 'iq-error:unparsed', text: text?.[1] };
}

export interface StreamScanHandlers {
  /** True while the stream header is still to come: the next opening tag is the header. */
  expectsHeader(): boolean;
  header(openTag: string): void;
  /** One complete top-level element: its name, opening tag, and where its content and end are in `data`. */
  element(name: string, openTag: string, data: string, contentStart: number, end: number): void;
  streamEnd(): void;
}

/**
 * Hands every complete top-level element of `data` (what was left over plus the new chunk) to
 * `handlers` and returns the incomplete rest, to be prefixed to the next chunk.
 */
export function scanStream(data: string, handlers: StreamScanHandlers): string {
  let pos = 0;
  for (;;) {
    const lt = data.indexOf('<', pos);
    if (lt === -1) {
      pos = data.length;
      break;
    }
    if (data.startsWith('<?', lt)) {
      const end = data.indexOf('?>', lt);
      if (end === -1) { pos = lt; break; }
      pos = end + 2;
      continue;
    }
    if (data.startsWith('</stream:stream', lt)) {
      handlers.streamEnd();
      pos = data.length;
      break;
    }
    const openEnd = data.indexOf('>', lt);
    if (openEnd === -1) { pos = lt; break; }
    if (handlers.expectsHeader()) {
      handlers.header(data.slice(lt, openEnd + 1));
      pos = openEnd + 1;
      continue;
    }
    let nameEnd = lt + 1;
    while (nameEnd < openEnd) {
      const c = data.charCodeAt(nameEnd);
      if (c === 32 || c === 47 || c === 9 || c === 10 || c === 13) break;
      nameEnd++;
    }
    const name = data.slice(lt + 1, nameEnd);
    let end: number;
    if (data.charCodeAt(openEnd - 1) === 47 /* '/' */) {
      end = openEnd + 1;
    } else {
      const close = data.indexOf(`</${name}>`, openEnd);
      if (close === -1) { pos = lt; break; }
      end = close + name.length + 3;
    }
    handlers.element(name, data.slice(lt, openEnd + 1), data, openEnd + 1, end);
    pos = end;
  }
  return pos >= data.length ? '' : data.slice(pos);
}

/**
 * Where the push phase writes its publishes and hears the answers: the XmppPeer (the bench plays
 * the user's server itself) or a ComponentRoute (through a real XMPP server, `--via prosody`).
 */
export interface PublishRoute {
  publish(id: string, target: PublishTarget): void;
  onReply: (reply: IqReply) => void;
  /** Called when the way to push-appserver breaks during a run. */
  onClose: (reason: string) => void;
  readonly handshakeFailures: number;
  /** Publishes written per push-appserver connection (one entry when the route cannot tell). */
  readonly publishesByConnection: number[];
  close(): Promise<void>;
}

export interface XmppPeerOptions {
  componentJid: string;
  secret: string;
  /** The "user's server" the publishes come from. */
  from?: string;
  /**
   * Component connections accepted for the JID (default 1, as Prosody allows). With more, the peer
   * plays an ejabberd whose `ejabberd_service` takes several connections for one host: publishes go
   * round-robin over the connections that are online.
   */
  connections?: number;
}

/** One component connection: its stream, its handshake and its write batching. */
export class PeerConnection {
  readonly socket: Socket;
  buffer = '';
  phase: 'header' | 'handshake' | 'online' | 'closed' = 'header';
  streamId = '';
  outgoing: string[] = [];
  flushScheduled = false;

  constructor(socket: Socket) {
    this.socket = socket;
  }

  queue(stanza: string): void {
    this.outgoing.push(stanza);
    if (!this.flushScheduled) {
      this.flushScheduled = true;
      queueMicrotask(() => this.flush());
    }
  }

  flush(): void {
    this.flushScheduled = false;
    if (this.outgoing.length === 0) return;
    const data = this.outgoing.length === 1 ? this.outgoing[0] : this.outgoing.join('');
    this.outgoing = [];
    if (this.phase === 'online' && !this.socket.destroyed) this.socket.write(data);
  }
}

/**
 * One listening socket; the component's connections are accepted and authenticated, after which
 * `publish()` writes stanzas (batched per event-loop turn and connection) and `onReply` reports each answer.
 */
export class XmppPeer implements PublishRoute {
  private readonly options: XmppPeerOptions;
  private readonly server: Server;
  private readonly expected: number;
  private readonly live: PeerConnection[] = [];
  private online: PeerConnection[] = [];
  private next = 0;
  private onlineWaiters: Array<{ resolve: () => void; reject: (error: Error) => void }> = [];
  private closing = false;
  readonly from: string;
  port = 0;
  onReply: (reply: IqReply) => void = () => {};
  /** Called when a component connection ends after it was online (an error during a run). */
  onClose: (reason: string) => void = () => {};
  handshakeFailures = 0;
  /** Publishes written per connection, in the order the connections came online. */
  readonly publishesByConnection: number[] = [];

  constructor(options: XmppPeerOptions) {
    this.options = options;
    this.from = options.from ?? 'localhost';
    this.expected = Math.max(1, options.connections ?? 1);
    this.server = createServer((socket) => this.accept(socket));
  }

  async listen(): Promise<number> {
    await new Promise<void>((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(0, '127.0.0.1', () => resolve());
    });
    this.port = (this.server.address() as { port: number }).port;
    return this.port;
  }

  /** Resolves once every expected connection completed its handshake. */
  waitOnline(timeoutMs: number): Promise<void> {
    if (this.online.length >= this.expected) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`push-appserver did not complete the XEP-0114 handshake within ${timeoutMs} ms (${this.online.length} of ${this.expected} connections online)`)), timeoutMs);
      this.onlineWaiters.push({
        resolve: () => { clearTimeout(timer); resolve(); },
        reject: (error) => { clearTimeout(timer); reject(error); },
      });
    });
  }

  /** Queues one publish on the next online connection; all queued in one turn of the event loop leave in one write each. */
  publish(id: string, target: PublishTarget): void {
    if (this.online.length === 0) return;
    const index = this.next++ % this.online.length;
    this.publishesByConnection[index] = (this.publishesByConnection[index] ?? 0) + 1;
    this.online[index].queue(publishStanza(id, this.from, this.options.componentJid, target));
  }

  async close(): Promise<void> {
    this.closing = true;
    for (const connection of this.live) {
      connection.phase = 'closed';
      const socket = connection.socket;
      if (!socket.destroyed) {
        socket.end('</stream:stream>');
        setTimeout(() => socket.destroy(), 1000).unref();
      }
    }
    if (this.server.listening) await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  private accept(socket: Socket): void {
    if (this.live.length >= this.expected || this.closing) {
      // No more connections for this JID than expected (Prosody allows one).
      socket.end(`<?xml version='1.0'?><stream:stream xmlns:stream='${NS_STREAMS}' xmlns='jabber:component:accept' id='x'><stream:error><conflict xmlns='urn:ietf:params:xml:ns:xmpp-streams'/></stream:error></stream:stream>`);
      return;
    }
    const connection = new PeerConnection(socket);
    this.live.push(connection);
    socket.setEncoding('utf8');
    socket.setNoDelay(true);
    socket.on('data', (chunk: string) => this.onData(connection, chunk));
    socket.on('error', () => {});
    socket.on('close', () => {
      const wasOnline = connection.phase === 'online';
      connection.phase = 'closed';
      this.live.splice(this.live.indexOf(connection), 1);
      this.online = this.online.filter((c) => c !== connection);
      if (wasOnline && !this.closing) this.onClose('the component closed its connection');
    });
  }

  private fail(connection: PeerConnection, reason: string): void {
    for (const waiter of this.onlineWaiters.splice(0)) waiter.reject(new Error(reason));
    connection.socket.end(`<stream:error><not-authorized xmlns='urn:ietf:params:xml:ns:xmpp-streams'/></stream:error></stream:stream>`);
  }

  private onData(connection: PeerConnection, chunk: string): void {
    connection.buffer = scanStream(connection.buffer.length > 0 ? connection.buffer + chunk : chunk, {
      expectsHeader: () => connection.phase === 'header',
      header: (tag) => this.onStreamHeader(connection, tag),
      element: (name, openTag, data, contentStart, end) => this.onElement(connection, name, openTag, data, contentStart, end),
      streamEnd: () => connection.socket.end('</stream:stream>'),
    });
  }

  private onStreamHeader(connection: PeerConnection, tag: string): void {
    if (!tag.startsWith('<stream:stream')) return this.fail(connection, `expected a stream header, got ${tag.slice(0, 40)}`);
    connection.streamId = randomBytes(8).toString('hex');
    connection.phase = 'handshake';
    connection.socket.write(`<?xml version='1.0'?><stream:stream xmlns:stream='${NS_STREAMS}' xmlns='jabber:component:accept' from='${this.options.componentJid}' id='${connection.streamId}'>`);
  }

  private onElement(connection: PeerConnection, name: string, openTag: string, data: string, contentStart: number, end: number): void {
    if (connection.phase === 'handshake') {
      if (name !== 'handshake') return;
      const digest = data.slice(contentStart, end - '</handshake>'.length).trim().toLowerCase();
      const expected = createHash('sha1').update(connection.streamId + this.options.secret).digest('hex');
      if (digest !== expected) {
        this.handshakeFailures += 1;
        return this.fail(connection, 'the component sent a wrong handshake digest');
      }
      connection.phase = 'online';
      this.online.push(connection);
      connection.socket.write('<handshake/>');
      if (this.online.length >= this.expected) for (const waiter of this.onlineWaiters.splice(0)) waiter.resolve();
      return;
    }
    const reply = name === 'iq' ? iqReplyOf(openTag, data, contentStart, end) : undefined;
    if (reply) this.onReply(reply);
  }
}
