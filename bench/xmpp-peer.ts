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
function attribute(tag: string, name: string): string | undefined {
  let at = tag.indexOf(` ${name}=`);
  if (at === -1) return undefined;
  at += name.length + 2;
  const quote = tag[at];
  const end = tag.indexOf(quote, at + 1);
  return end === -1 ? undefined : tag.slice(at + 1, end);
}

const ERROR_CONDITION = /<error\b[^>]*\btype=['"]([a-z]+)['"][^>]*>\s*<([a-z-]+)/;
const ERROR_TEXT = /<text\b[^>]*>([^<]*)<\/text>/;

export interface XmppPeerOptions {
  componentJid: string;
  secret: string;
  /** The "user's server" the publishes come from. */
  from?: string;
  /**
   * Component connections accepted at once. 1 (the default) refuses a second one with `conflict`,
   * as Prosody does; more plays ejabberd, whose ejabberd_service takes several connections for one
   * host and spreads stanzas over them (here: in turn).
   */
  maxConnections?: number;
}

/** One accepted component connection: stream header, handshake, then stanzas. */
class ComponentConnection {
  private readonly peer: XmppPeer;
  readonly socket: Socket;
  private buffer = '';
  phase: 'header' | 'handshake' | 'online' | 'closed' = 'header';
  private streamId = '';
  outgoing: string[] = [];

  constructor(peer: XmppPeer, socket: Socket) {
    this.peer = peer;
    this.socket = socket;
    socket.setEncoding('utf8');
    socket.setNoDelay(true);
    socket.on('data', (chunk: string) => this.onData(chunk));
    socket.on('error', () => {});
  }

  flush(): void {
    if (this.outgoing.length === 0) return;
    const data = this.outgoing.length === 1 ? this.outgoing[0] : this.outgoing.join('');
    this.outgoing = [];
    if (this.phase === 'online') this.socket.write(data);
  }

  private fail(reason: string): void {
    this.peer.connectionFailed(reason);
    this.socket.end(`<stream:error><not-authorized xmlns='urn:ietf:params:xml:ns:xmpp-streams'/></stream:error></stream:stream>`);
  }

  private onData(chunk: string): void {
    const data = this.buffer.length > 0 ? this.buffer + chunk : chunk;
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
        this.socket.end('</stream:stream>');
        pos = data.length;
        break;
      }
      const openEnd = data.indexOf('>', lt);
      if (openEnd === -1) { pos = lt; break; }
      if (this.phase === 'header') {
        this.onStreamHeader(data.slice(lt, openEnd + 1));
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
      this.onElement(name, data.slice(lt, openEnd + 1), data, openEnd + 1, end);
      pos = end;
    }
    this.buffer = pos >= data.length ? '' : data.slice(pos);
  }

  private onStreamHeader(tag: string): void {
    if (!tag.startsWith('<stream:stream')) return this.fail(`expected a stream header, got ${tag.slice(0, 40)}`);
    this.streamId = randomBytes(8).toString('hex');
    this.phase = 'handshake';
    this.socket.write(`<?xml version='1.0'?><stream:stream xmlns:stream='${NS_STREAMS}' xmlns='jabber:component:accept' from='${this.peer.componentJid}' id='${this.streamId}'>`);
  }

  private onElement(name: string, openTag: string, data: string, contentStart: number, end: number): void {
    if (this.phase === 'handshake') {
      if (name !== 'handshake') return;
      const digest = data.slice(contentStart, end - '</handshake>'.length).trim().toLowerCase();
      const expected = createHash('sha1').update(this.streamId + this.peer.secret).digest('hex');
      if (digest !== expected) {
        this.peer.handshakeFailures += 1;
        return this.fail('the component sent a wrong handshake digest');
      }
      this.phase = 'online';
      this.socket.write('<handshake/>');
      this.peer.connectionOnline();
      return;
    }
    if (name !== 'iq') return;
    const type = attribute(openTag, 'type');
    const id = attribute(openTag, 'id');
    if (id === undefined || (type !== 'result' && type !== 'error')) return;
    if (type === 'result') {
      this.peer.onReply({ id, ok: true });
      return;
    }
    const body = data.slice(contentStart, end);
    const condition = ERROR_CONDITION.exec(body);
    const text = ERROR_TEXT.exec(body);
    this.peer.onReply({ id, ok: false, error: condition ? `iq-error:${condition[1]}/${condition[2]}` : 'iq-error:unparsed', text: text?.[1] });
  }
}

/**
 * One listening socket; the component's connections are accepted and authenticated, after which
 * `publish()` writes stanzas (batched per event-loop turn and connection) and `onReply` reports
 * each answer.
 */
export class XmppPeer {
  private readonly options: XmppPeerOptions;
  private readonly server: Server;
  private readonly connections: ComponentConnection[] = [];
  private next = 0;
  private flushScheduled = false;
  private closed = false;
  private onlineWaiters: Array<{ count: number; resolve: () => void; reject: (error: Error) => void }> = [];
  readonly from: string;
  port = 0;
  onReply: (reply: IqReply) => void = () => {};
  /** Called when a component connection ends after it was online (an error during a run). */
  onClose: (reason: string) => void = () => {};
  handshakeFailures = 0;

  constructor(options: XmppPeerOptions) {
    this.options = options;
    this.from = options.from ?? 'localhost';
    this.server = createServer((socket) => this.accept(socket));
  }

  get componentJid(): string {
    return this.options.componentJid;
  }

  get secret(): string {
    return this.options.secret;
  }

  async listen(): Promise<number> {
    await new Promise<void>((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(0, '127.0.0.1', () => resolve());
    });
    this.port = (this.server.address() as { port: number }).port;
    return this.port;
  }

  private onlineConnections(): ComponentConnection[] {
    return this.connections.filter((connection) => connection.phase === 'online');
  }

  get online(): boolean {
    return this.onlineConnections().length > 0;
  }

  /** Resolves once `count` component connections completed the handshake. */
  waitOnline(timeoutMs: number, count = 1): Promise<void> {
    if (this.onlineConnections().length >= count) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`push-appserver did not complete the XEP-0114 handshake within ${timeoutMs} ms (${this.onlineConnections().length} of ${count} online)`)), timeoutMs);
      this.onlineWaiters.push({
        count,
        resolve: () => { clearTimeout(timer); resolve(); },
        reject: (error) => { clearTimeout(timer); reject(error); },
      });
    });
  }

  /** Queues one publish on the next online connection in turn; all queued in one turn of the event loop leave in one write each. */
  publish(id: string, target: PublishTarget): void {
    const online = this.onlineConnections();
    if (online.length === 0) return;
    const connection = online[this.next++ % online.length];
    connection.outgoing.push(publishStanza(id, this.from, this.options.componentJid, target));
    if (!this.flushScheduled) {
      this.flushScheduled = true;
      queueMicrotask(() => this.flush());
    }
  }

  flush(): void {
    this.flushScheduled = false;
    for (const connection of this.connections) connection.flush();
  }

  async close(): Promise<void> {
    this.closed = true;
    for (const connection of this.connections) {
      connection.phase = 'closed';
      const socket = connection.socket;
      if (!socket.destroyed) {
        socket.end('</stream:stream>');
        setTimeout(() => socket.destroy(), 1000).unref();
      }
    }
    if (this.server.listening) await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  /** @internal */
  connectionOnline(): void {
    const online = this.onlineConnections().length;
    this.onlineWaiters = this.onlineWaiters.filter((waiter) => {
      if (online < waiter.count) return true;
      waiter.resolve();
      return false;
    });
  }

  /** @internal */
  connectionFailed(reason: string): void {
    for (const waiter of this.onlineWaiters.splice(0)) waiter.reject(new Error(reason));
  }

  private accept(socket: Socket): void {
    const live = this.connections.filter((connection) => !connection.socket.destroyed);
    if (this.closed || live.length >= (this.options.maxConnections ?? 1)) {
      socket.end(`<?xml version='1.0'?><stream:stream xmlns:stream='${NS_STREAMS}' xmlns='jabber:component:accept' id='x'><stream:error><conflict xmlns='urn:ietf:params:xml:ns:xmpp-streams'/></stream:error></stream:stream>`);
      return;
    }
    const connection = new ComponentConnection(this, socket);
    this.connections.push(connection);
    socket.on('close', () => {
      const index = this.connections.indexOf(connection);
      if (index !== -1) this.connections.splice(index, 1);
      const wasOnline = connection.phase === 'online';
      connection.phase = 'closed';
      if (wasOnline && !this.closed) this.onClose('the component closed its connection');
    });
  }
}
