/**
 * XEP-0114 (Jabber Component Protocol): the TCP connection to the XMPP server, the SHA-1 handshake,
 * and reconnection with capped exponential backoff. A refused secret is logged as such and retried
 * slowly: it is an operator's mistake and will not fix itself in a second.
 *
 * Hostile input must not cost the stream: an oversized stanza is skipped and reported (`oversized`),
 * only XML that is not well-formed ends the stream, and the backoff starts over only once a stream
 * stayed up for `stableAfterMs` (so a peer that makes us drop every stream cannot make us reconnect
 * in a tight loop). Connect + handshake have a deadline. Writes respect back-pressure: while the
 * socket is congested, stanzas wait in a bounded outbox; beyond its bound they are dropped with a
 * (throttled) warning, never silently.
 */
import { createHash } from 'node:crypto';
import { EventEmitter } from 'node:events';
import { connect, type Socket } from 'node:net';
import { Element } from 'ltx';
import { ThrottledWarning } from '../core/throttled-warning.ts';
import type { Logger } from '../log.ts';
import { StreamParser, type OversizedStanza } from './stream-parser.ts';

export interface ComponentOptions {
  jid: string;
  host: string;
  port: number;
  secret: string;
  reconnectInitialMs: number;
  reconnectMaxMs: number;
  authFailureRetryMs: number;
  maxStanzaBytes: number;
  /** Deadline for connect + stream header + handshake. */
  connectTimeoutMs?: number;
  /** The backoff starts over only after a stream stayed up this long. */
  stableAfterMs?: number;
  /** Bytes held while the socket is congested; more are dropped (and logged). */
  maxOutboxBytes?: number;
  /** Whitespace keepalive, so a dead peer is noticed and NATs keep the flow. */
  keepaliveMs?: number;
  /**
   * After a read, the socket is left unread this long, so publishes arriving meanwhile are handled
   * together (one read, one HTTP/2 write, one reply write). 0 reads each arrival at once.
   */
  readCoalesceMs?: number;
}

/** One read takes at most this much; a full read means more is waiting, so it is never held. */
const READ_BUFFER_BYTES = 64 * 1024;

export type ComponentState = 'stopped' | 'connecting' | 'online' | 'offline' | 'auth-failed';

const NS_STREAMS = 'http://etherx.jabber.org/streams';
const NS_STREAM_ERRORS = 'urn:ietf:params:xml:ns:xmpp-streams';

export function handshakeDigest(streamId: string, secret: string): string {
  return createHash('sha1').update(streamId + secret).digest('hex');
}

interface ComponentEvents {
  online: [];
  offline: [];
  stanza: [Element];
  oversized: [OversizedStanza];
}

export class Component extends EventEmitter<ComponentEvents> {
  private readonly options: ComponentOptions;
  private readonly logger: Logger;
  private socket: Socket | undefined;
  private reconnectTimer: NodeJS.Timeout | undefined;
  private keepaliveTimer: NodeJS.Timeout | undefined;
  private connectTimer: NodeJS.Timeout | undefined;
  private stableTimer: NodeJS.Timeout | undefined;
  private resumeTimer: NodeJS.Timeout | undefined;
  private outbox: string[] = [];
  private outboxBytes = 0;
  private flushScheduled = false;
  /** socket.write returned false: wait for 'drain' before writing more. */
  private congested = false;
  private readonly overflowWarning: ThrottledWarning;
  private failures = 0;
  private authRefused = false;
  state: ComponentState = 'stopped';
  /** Why the last connection ended, for health and logs. */
  lastError: string | undefined;
  connectedSince: number | undefined;

  constructor(options: ComponentOptions, logger: Logger) {
    super();
    this.options = options;
    this.logger = logger;
    this.overflowWarning = new ThrottledWarning(logger, 'outgoing stanzas dropped: the XMPP server reads slower than we answer (outbox full)');
  }

  start(): void {
    if (this.state !== 'stopped') return;
    this.state = 'connecting';
    this.open();
  }

  /**
   * Sends a stanza; false when it cannot leave: offline (the caller's reply is lost, as with any
   * dropped stream) or the outbox is full (logged here, throttled).
   */
  send(stanza: Element | string): boolean {
    if (this.state !== 'online' || !this.socket) return false;
    const data = typeof stanza === 'string' ? stanza : stanza.toString();
    const bytes = Buffer.byteLength(data);
    if (this.outboxBytes + bytes > (this.options.maxOutboxBytes ?? 16 * 1024 * 1024)) {
      this.overflowWarning.note({ held_bytes: this.outboxBytes });
      return false;
    }
    // Stanzas sent in one turn of the event loop leave in one write: under load, one syscall for
    // many iq replies instead of one each (the profile showed socket writes as the top cost).
    this.outbox.push(data);
    this.outboxBytes += bytes;
    this.scheduleFlush();
    return true;
  }

  /** Connection attempts since the last stream that stayed up (what the backoff grows with). */
  get consecutiveFailures(): number {
    return this.failures;
  }

  /** Bytes waiting to be written (congestion), for health and tests. */
  get pendingBytes(): number {
    return this.outboxBytes;
  }

  private scheduleFlush(): void {
    if (this.flushScheduled || this.congested) return;
    this.flushScheduled = true;
    setImmediate(() => {
      this.flushScheduled = false;
      this.flushOutbox();
    });
  }

  private flushOutbox(force = false): void {
    if (this.outbox.length === 0 || (this.congested && !force)) return;
    const socket = this.socket;
    if (!socket?.writable) return;
    const data = this.outbox.length === 1 ? this.outbox[0] : this.outbox.join('');
    this.outbox = [];
    this.outboxBytes = 0;
    if (!socket.write(data)) this.congested = true;
  }

  async stop(): Promise<void> {
    const socket = this.socket;
    this.state = 'stopped';
    clearTimeout(this.reconnectTimer);
    clearTimeout(this.connectTimer);
    clearTimeout(this.stableTimer);
    clearInterval(this.keepaliveTimer);
    if (!socket || socket.destroyed) return;
    // A socket held by read coalescing would not notice the server closing the stream.
    if (this.resumeTimer !== undefined) {
      clearTimeout(this.resumeTimer);
      this.resumeTimer = undefined;
      socket.resume();
    }
    this.flushOutbox(true);
    await new Promise<void>((resolve) => {
      socket.once('close', () => resolve());
      socket.end('</stream:stream>');
      setTimeout(() => socket.destroy(), 2000).unref();
    });
  }

  private open(): void {
    const { host, port, jid } = this.options;
    this.authRefused = false;
    const coalesceMs = this.options.readCoalesceMs ?? 0;
    // Interrupt moderation, as a NIC does it: an arrival after a quiet spell is read at once, but
    // while publishes keep coming the socket is read at most once per window, so each wake-up,
    // read, TLS record and reply write is shared by the publishes of that window. On this kind of
    // machine waking an idle process costs more CPU than the publish itself (bench/RESULTS.md).
    const socket: Socket = coalesceMs > 0
      ? connect({ host, port, onread: { buffer: Buffer.allocUnsafe(READ_BUFFER_BYTES), callback: (bytes: number, buffer: Uint8Array): boolean => this.onRead(socket, parser, coalesceMs, bytes, buffer) } })
      : connect({ host, port });
    this.socket = socket;
    this.congested = false;
    socket.setNoDelay(true);
    const deadline = this.options.connectTimeoutMs ?? 10_000;
    this.connectTimer = setTimeout(() => {
      if (this.socket !== socket || this.state === 'online') return;
      this.lastError = `no handshake within ${deadline} ms (xmpp.connect_timeout_ms)`;
      socket.destroy();
    }, deadline);
    this.connectTimer.unref();
    socket.setKeepAlive(true, 30_000);

    let handshakeSent = false;
    const parser = new StreamParser({
      streamStart: (attrs) => {
        if (!attrs.id) return this.abort(socket, 'the server sent no stream id');
        handshakeSent = true;
        socket.write(new Element('handshake').t(handshakeDigest(attrs.id, this.options.secret)).toString());
      },
      stanza: (element) => {
        if (this.state === 'online') this.emit('stanza', element);
        else if (element.name === 'handshake' && handshakeSent) this.becomeOnline(socket);
        else if (element.name === 'stream:error' || element.is('error', NS_STREAMS)) this.onStreamError(element);
      },
      oversized: (stanza) => {
        if (this.state === 'online') this.emit('oversized', stanza);
      },
      streamEnd: () => socket.end(),
      error: (error) => this.abort(socket, `bad XML from the server: ${error.message}`, 'bad-format'),
    }, this.options.maxStanzaBytes);

    socket.on('connect', () => {
      this.logger.debug('connected, opening stream', { host, port });
      socket.write(`<?xml version='1.0'?><stream:stream xmlns='jabber:component:accept' xmlns:stream='${NS_STREAMS}' to='${jid}'>`);
    });
    if (coalesceMs === 0) socket.on('data', (chunk: Buffer) => parser.write(chunk));
    socket.on('drain', () => {
      this.congested = false;
      this.flushOutbox();
    });
    socket.on('error', (error) => {
      this.lastError = error.message;
      this.logger.debug('socket error', { error: error.message });
    });
    socket.on('close', () => this.onClose(socket));
  }

  /** A read into the shared buffer; false pauses the socket until the coalescing window ends. */
  private onRead(socket: Socket, parser: StreamParser, coalesceMs: number, bytes: number, buffer: Uint8Array): boolean {
    // The parser keeps unfinished stanzas by reference; the read buffer is reused, so it gets a copy.
    const wasOnline = this.state === 'online';
    parser.write(Buffer.from(buffer.subarray(0, bytes)));
    if (!wasOnline || bytes === buffer.length || this.state !== 'online' || this.socket !== socket || socket.destroyed) return true;
    this.resumeTimer = setTimeout(() => {
      this.resumeTimer = undefined;
      if (this.socket === socket && !socket.destroyed) socket.resume();
    }, coalesceMs);
    return false;
  }

  private becomeOnline(socket: Socket): void {
    this.state = 'online';
    clearTimeout(this.connectTimer);
    // Only a stream that stays up earns a fresh backoff: one dropped at once keeps the count.
    this.stableTimer = setTimeout(() => {
      if (this.socket === socket && this.state === 'online') this.failures = 0;
    }, this.options.stableAfterMs ?? 60_000);
    this.stableTimer.unref();
    this.lastError = undefined;
    this.connectedSince = Date.now();
    this.logger.info('component online', { jid: this.options.jid, server: `${this.options.host}:${this.options.port}` });
    const keepaliveMs = this.options.keepaliveMs ?? 60_000;
    this.keepaliveTimer = setInterval(() => {
      if (!this.congested) socket.write(' ');
    }, keepaliveMs);
    this.keepaliveTimer.unref();
    this.emit('online');
  }

  private onStreamError(element: Element): void {
    const condition = element.getChildElements().find((child) => child.getNS() === NS_STREAM_ERRORS && child.name !== 'text');
    const text = element.getChildText('text', NS_STREAM_ERRORS);
    const name = condition?.name ?? 'unknown';
    this.lastError = `stream error ${name}${text ? `: ${text}` : ''}`;
    if (name === 'not-authorized' || name === 'host-unknown' || name === 'conflict') {
      this.authRefused = true;
      const why = name === 'not-authorized'
        ? 'the XMPP server refused the component secret: check xmpp.component_secret against the server\'s component_secret'
        : name === 'host-unknown'
          ? `the XMPP server does not know the component ${this.options.jid}: check xmpp.component_jid and the server's Component entry`
          : `another connection already serves ${this.options.jid}`;
      this.logger.error(why, { jid: this.options.jid, condition: name, text });
    } else {
      this.logger.warn('stream error from the XMPP server', { condition: name, text });
    }
  }

  private abort(socket: Socket, reason: string, condition = 'undefined-condition'): void {
    this.lastError = reason;
    this.logger.warn('closing the stream', { reason });
    if (!socket.destroyed) {
      socket.end(`<stream:error><${condition} xmlns='${NS_STREAM_ERRORS}'/></stream:error></stream:stream>`);
      setTimeout(() => socket.destroy(), 1000).unref();
    }
  }

  private onClose(socket: Socket): void {
    if (socket !== this.socket) return;
    clearInterval(this.keepaliveTimer);
    clearTimeout(this.connectTimer);
    clearTimeout(this.stableTimer);
    clearTimeout(this.resumeTimer);
    this.socket = undefined;
    if (this.outbox.length > 0) this.logger.warn('stanzas not sent: the stream closed', { stanzas: this.outbox.length, bytes: this.outboxBytes });
    this.outbox = [];
    this.outboxBytes = 0;
    this.congested = false;
    const wasOnline = this.state === 'online';
    this.connectedSince = undefined;
    if (this.state === 'stopped') return;
    this.state = this.authRefused ? 'auth-failed' : 'offline';
    if (wasOnline) {
      this.logger.warn('component offline, reconnecting', { reason: this.lastError });
      this.emit('offline');
    }
    this.failures += 1;
    const backoff = Math.min(this.options.reconnectMaxMs, this.options.reconnectInitialMs * 2 ** Math.min(this.failures - 1, 20));
    const delay = this.authRefused ? Math.max(this.options.authFailureRetryMs, backoff) : backoff * (0.8 + Math.random() * 0.4);
    if (!wasOnline && !this.authRefused) {
      const log = this.failures === 1 || this.failures % 10 === 0 ? this.logger.warn : this.logger.debug;
      log('cannot reach the XMPP server, retrying', { server: `${this.options.host}:${this.options.port}`, reason: this.lastError, attempt: this.failures, in_ms: Math.round(delay) });
    }
    this.reconnectTimer = setTimeout(() => {
      if (this.state === 'stopped') return;
      this.state = 'connecting';
      this.open();
    }, delay);
  }
}
