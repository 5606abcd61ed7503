/**
 * `--via prosody`: the load generator as an XEP-0114 component of a real XMPP server, so publishes
 * reach push-appserver the way they do in production: routed by that server, in the reads and
 * writes its event loop makes of them, rather than written by the bench straight onto
 * push-appserver's socket. Issue 13's low-rate figure was measured this way.
 *
 * The route connects as its own component (e.g. `load.localhost`), sends each publish from
 * `bench@<its JID>` to push-appserver's JID, and matches the iq results and errors the server
 * routes back. Before a run it probes push-appserver with a disco#info iq until one is answered:
 * Prosody bounces iqs to a component that is not connected with `service-unavailable`.
 */
import { createHash } from 'node:crypto';
import { connect } from 'node:net';
import { attribute, iqReplyOf, PeerConnection, publishStanza, scanStream, type IqReply, type PublishRoute, type PublishTarget } from './xmpp-peer.ts';

const NS_STREAMS = 'http://etherx.jabber.org/streams';
const PROBE_EVERY_MS = 100;

export interface ComponentRouteOptions {
  /** The XMPP server's component port on 127.0.0.1. */
  port: number;
  /** This route's own component JID and secret, as configured on the server. */
  jid: string;
  secret: string;
  /** push-appserver's component JID. */
  target: string;
  /**
   * Publishes come from this many users of the route's domain in turn (default 1): a server that
   * spreads a component's stanzas over its connections by sender (ejabberd) needs more than one.
   */
  senders?: number;
}

export class ComponentRoute implements PublishRoute {
  private readonly options: ComponentRouteOptions;
  private readonly connection: PeerConnection;
  private readonly probes = new Map<string, (reply: IqReply) => void>();
  private probeCount = 0;
  private closing = false;
  private online!: { resolve: () => void; reject: (error: Error) => void };
  readonly from: string;
  private readonly senders: string[];
  private nextSender = 0;
  readonly publishesByConnection = [0];
  handshakeFailures = 0;
  onReply: (reply: IqReply) => void = () => {};
  onClose: (reason: string) => void = () => {};

  private constructor(options: ComponentRouteOptions, connection: PeerConnection) {
    this.options = options;
    this.connection = connection;
    this.from = `bench@${options.jid}`;
    const senders = Math.max(1, options.senders ?? 1);
    this.senders = senders === 1 ? [this.from] : Array.from({ length: senders }, (_, i) => `bench${i}@${options.jid}`);
  }

  /** Connects and completes the handshake as `options.jid`. */
  static async connect(options: ComponentRouteOptions, timeoutMs = 10_000): Promise<ComponentRoute> {
    const socket = connect({ host: '127.0.0.1', port: options.port });
    const route = new ComponentRoute(options, new PeerConnection(socket));
    const online = new Promise<void>((resolve, reject) => { route.online = { resolve, reject }; });
    const timer = setTimeout(() => route.online.reject(new Error(`the XMPP server did not complete the handshake of ${options.jid} within ${timeoutMs} ms`)), timeoutMs);
    socket.setEncoding('utf8');
    socket.setNoDelay(true);
    socket.on('connect', () => socket.write(`<?xml version='1.0'?><stream:stream xmlns='jabber:component:accept' xmlns:stream='${NS_STREAMS}' to='${options.jid}'>`));
    socket.on('data', (chunk: string) => route.onData(chunk));
    socket.on('error', (error) => route.online.reject(new Error(`the route to the XMPP server failed: ${error.message}`)));
    socket.on('close', () => {
      const wasOnline = route.connection.phase === 'online';
      route.connection.phase = 'closed';
      route.online.reject(new Error('the XMPP server closed the route\'s connection'));
      if (wasOnline && !route.closing) route.onClose('the XMPP server closed the load generator\'s component connection');
    });
    try {
      await online;
    } finally {
      clearTimeout(timer);
    }
    return route;
  }

  publish(id: string, target: PublishTarget): void {
    this.publishesByConnection[0] += 1;
    const from = this.senders[this.nextSender++ % this.senders.length];
    this.connection.queue(publishStanza(id, from, this.options.target, target));
  }

  /** Resolves once push-appserver (or the forwarder) answers a disco#info iq through the server. */
  async waitTargetOnline(timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    let last = 'no answer';
    while (Date.now() < deadline) {
      const id = `probe-${++this.probeCount}`;
      const reply = await new Promise<IqReply | undefined>((resolve) => {
        const timer = setTimeout(() => { this.probes.delete(id); resolve(undefined); }, PROBE_EVERY_MS * 5);
        this.probes.set(id, (answer) => { clearTimeout(timer); resolve(answer); });
        this.connection.queue(`<iq type='get' from='${this.from}' to='${this.options.target}' id='${id}'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>`);
      });
      if (reply?.ok) return;
      last = reply?.error ?? 'no answer';
      await new Promise((resolve) => setTimeout(resolve, PROBE_EVERY_MS));
    }
    throw new Error(`${this.options.target} did not answer through the XMPP server within ${timeoutMs} ms (last probe: ${last})`);
  }

  async close(): Promise<void> {
    this.closing = true;
    const socket = this.connection.socket;
    if (socket.destroyed) return;
    const closed = new Promise((resolve) => socket.once('close', resolve));
    socket.end('</stream:stream>');
    setTimeout(() => socket.destroy(), 1000).unref();
    await closed;
  }

  private onData(chunk: string): void {
    const connection = this.connection;
    connection.buffer = scanStream(connection.buffer.length > 0 ? connection.buffer + chunk : chunk, {
      expectsHeader: () => connection.phase === 'header',
      header: (tag) => {
        connection.streamId = attribute(tag, 'id') ?? '';
        connection.phase = 'handshake';
        connection.socket.write(`<handshake>${createHash('sha1').update(connection.streamId + this.options.secret).digest('hex')}</handshake>`);
      },
      element: (name, openTag, data, contentStart, end) => {
        if (connection.phase === 'handshake') {
          if (name === 'handshake') {
            connection.phase = 'online';
            this.online.resolve();
          } else {
            this.handshakeFailures += 1;
            this.online.reject(new Error(`the XMPP server refused the handshake of ${this.options.jid}: ${data.slice(contentStart - openTag.length, end).slice(0, 200)}`));
          }
          return;
        }
        const reply = name === 'iq' ? iqReplyOf(openTag, data, contentStart, end) : undefined;
        if (!reply) return;
        const probe = this.probes.get(reply.id);
        if (probe) {
          this.probes.delete(reply.id);
          probe(reply);
        } else {
          this.onReply(reply);
        }
      },
      streamEnd: () => connection.socket.end('</stream:stream>'),
    });
  }
}
