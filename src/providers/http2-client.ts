/**
 * A small HTTP/2 client over TLS for the push providers (APNS, FCM), on node:http2.
 *
 * RFC 9113 (HTTP/2): §5.1.2 the peer's SETTINGS_MAX_CONCURRENT_STREAMS is respected (requests
 * beyond it wait in our queue, so the per-request timeout covers the wait too); §6.8 GOAWAY: the
 * session drains, no new stream is opened on it, and a request whose stream id is above the
 * GOAWAY's last-stream-id was not processed by the server, so it is retried once on a new session;
 * §8.7 a stream reset with REFUSED_STREAM was not processed either and is retried once.
 *
 * Sessions are opened lazily and reused; with `connections` > 1 up to that many sessions are
 * opened as load needs them and each request goes to the least busy one. A request throws only
 * Http2TransportError (connection refused, TLS failure, timeout, session died); any HTTP status,
 * including 4xx/5xx, is an answer and is returned.
 */
import { connect, constants, type ClientHttp2Session, type ClientHttp2Stream, type IncomingHttpHeaders } from 'node:http2';
import type { Logger } from '../log.ts';

export interface Http2ClientOptions {
  /** For logs: which provider/app this client talks for. */
  name: string;
  /** `https://host:port`; requests are sent with this as `:authority`. */
  origin: string;
  /** Trusted CA(s). Passed explicitly so NODE_EXTRA_CA_CERTS and the system store do not matter to tests. */
  ca?: string | Buffer | Array<string | Buffer>;
  /** TLS client certificate (APNS certificate auth), PEM. */
  cert?: string | Buffer;
  key?: string | Buffer;
  passphrase?: string;
  /** TLS client certificate as PKCS#12. */
  pfx?: Buffer;
  /** Sessions to spread requests over (default 1). */
  connections?: number;
  /** From the call to `request()` to the full answer, including time spent queued or connecting. */
  requestTimeoutMs: number;
  logger: Logger;
  /** Answers larger than this are refused (default 1 MiB): push services answer in a few hundred bytes. */
  maxResponseBytes?: number;
}

export interface Http2Request {
  /** Default POST. */
  method?: string;
  path: string;
  headers?: Record<string, string>;
  body?: string | Buffer;
}

export interface Http2Response {
  status: number;
  /** Response headers without the pseudo-headers. */
  headers: Record<string, string | string[] | undefined>;
  body: string;
}

/**
 * The request got no HTTP answer. `code` is Node's error code where there is one (ECONNREFUSED,
 * ERR_SSL_…, …) or one of ETIMEDOUT, ESESSIONLOST, ECLIENTCLOSED, ERESPONSETOOLARGE.
 * `tlsAuthFailure` is true when the server refused our TLS client certificate (or it could not be
 * used at all): our credentials, not a transient fault.
 */
export class Http2TransportError extends Error {
  readonly code: string;
  readonly tlsAuthFailure: boolean;

  constructor(message: string, code: string, tlsAuthFailure = false, cause?: unknown) {
    super(message, cause === undefined ? undefined : { cause });
    this.name = 'Http2TransportError';
    this.code = code;
    this.tlsAuthFailure = tlsAuthFailure;
  }
}

/**
 * TLS alerts a server sends when it refuses the client certificate (OpenSSL's names as Node
 * reports them), and errors loading our own certificate or key.
 */
const TLS_AUTH_FAILURE = /ALERT_(BAD_CERTIFICATE|CERTIFICATE_REQUIRED|CERTIFICATE_UNKNOWN|CERTIFICATE_REVOKED|CERTIFICATE_EXPIRED|UNSUPPORTED_CERTIFICATE|ACCESS_DENIED|HANDSHAKE_FAILURE)|BAD_DECRYPT|PEM_|KEY_VALUES_MISMATCH|PKCS12|MAC_VERIFY_FAILURE|NO_CERTIFICATE|BAD_PASSWORD/i;

export function isTlsAuthFailure(error: unknown): boolean {
  const { code, message } = (error ?? {}) as { code?: unknown; message?: unknown };
  return TLS_AUTH_FAILURE.test(String(code ?? '')) || TLS_AUTH_FAILURE.test(String(message ?? ''));
}

function transportErrorFrom(error: unknown, context: string): Http2TransportError {
  if (error instanceof Http2TransportError) return error;
  const code = String((error as { code?: unknown })?.code ?? 'ESESSIONLOST');
  const message = (error as Error)?.message ?? String(error);
  return new Http2TransportError(`${context}: ${message}`, code, isTlsAuthFailure(error), error);
}

const DEFAULT_MAX_RESPONSE_BYTES = 1024 * 1024;

function ignoreStreamError(): void {}

interface Job {
  request: Http2Request;
  resolve(response: Http2Response): void;
  reject(error: Http2TransportError): void;
  timer: NodeJS.Timeout;
  settled: boolean;
  /** Times this request was put back in the queue after its session died under it. */
  retries: number;
  stream?: ClientHttp2Stream;
}

interface Slot {
  id: number;
  session: ClientHttp2Session;
  /** True once the peer's first SETTINGS arrived: only then is its concurrency limit known. */
  ready: boolean;
  /** After GOAWAY, close() or an error: no new streams. */
  draining: boolean;
  active: number;
  maxConcurrent: number;
  goawayLastStreamId?: number;
  failure?: Http2TransportError;
  /** Streams of this session that have not settled, so a session death can decide for each. */
  jobs: Set<Job>;
  finished?: boolean;
  closed?: () => void;
  /** The TLS handshake completed (from our side). */
  connected?: boolean;
}

export class Http2Client {
  private readonly options: Http2ClientOptions;
  private readonly logger: Logger;
  private readonly authority: string;
  private readonly connections: number;
  private readonly maxResponseBytes: number;
  private readonly queue: Job[] = [];
  private readonly slots: Slot[] = [];
  private nextSlotId = 1;
  private closing = false;
  private readonly closedSlots = new Map<Slot, Promise<void>>();

  constructor(options: Http2ClientOptions) {
    const url = new URL(options.origin);
    if (url.protocol !== 'https:') throw new Error(`${options.name}: origin must be https://host:port, got ${options.origin}`);
    this.options = options;
    this.logger = options.logger;
    this.authority = url.origin;
    this.connections = Math.max(1, Math.floor(options.connections ?? 1));
    this.maxResponseBytes = options.maxResponseBytes ?? DEFAULT_MAX_RESPONSE_BYTES;
  }

  /** Sessions currently open or opening (for tests and health). */
  get sessionCount(): number {
    return this.slots.length;
  }

  request(request: Http2Request): Promise<Http2Response> {
    if (this.closing) return Promise.reject(new Http2TransportError(`${this.options.name}: client is closed`, 'ECLIENTCLOSED'));
    return new Promise<Http2Response>((resolve, reject) => {
      const job: Job = {
        request,
        resolve,
        reject,
        settled: false,
        retries: 0,
        timer: setTimeout(() => this.timeOut(job), this.options.requestTimeoutMs),
      };
      this.queue.push(job);
      this.pump();
    });
  }

  /** Lets requests on the way finish, fails the queued ones, and closes every session. */
  async close(): Promise<void> {
    this.closing = true;
    for (const job of this.queue.splice(0)) {
      this.settle(job, new Http2TransportError(`${this.options.name}: client closed before the request was sent`, 'ECLIENTCLOSED'));
    }
    for (const slot of [...this.slots]) this.closeSlot(slot);
    await Promise.all(this.closedSlots.values());
  }

  private closeSlot(slot: Slot): void {
    slot.draining = true;
    // Sessions are unref'd while idle; a closing one must hold the event loop until its 'close',
    // or a process whose last work is close() exits with that promise unsettled.
    if (!slot.session.closed && !slot.session.destroyed) {
      slot.session.ref();
      slot.session.close();
    }
  }

  private settle(job: Job, outcome: Http2Response | Http2TransportError): void {
    if (job.settled) return;
    job.settled = true;
    clearTimeout(job.timer);
    if (outcome instanceof Http2TransportError) job.reject(outcome);
    else job.resolve(outcome);
  }

  private timeOut(job: Job): void {
    if (job.settled) return;
    const queued = this.queue.indexOf(job);
    if (queued !== -1) this.queue.splice(queued, 1);
    this.settle(job, new Http2TransportError(`${this.options.name}: no answer within ${this.options.requestTimeoutMs} ms`, 'ETIMEDOUT'));
    const stream = job.stream;
    if (stream && !stream.closed) {
      stream.close(constants.NGHTTP2_CANCEL);
      // A request that times out on an open session may mean a dead TCP path: probe it, drop it if silent.
      const slot = this.slots.find((candidate) => candidate.jobs.has(job));
      if (slot) this.probe(slot);
    }
  }

  private probe(slot: Slot): void {
    if (slot.draining || slot.session.destroyed) return;
    const deadline = setTimeout(() => {
      this.logger.warn('HTTP/2 session does not answer a PING; dropping it', { client: this.options.name, session: slot.id });
      slot.session.destroy(new Http2TransportError('session did not answer a PING', 'ETIMEDOUT'));
    }, this.options.requestTimeoutMs);
    deadline.unref();
    const sent = slot.session.ping((error) => {
      clearTimeout(deadline);
      if (error && !slot.session.destroyed) slot.session.destroy(error);
    });
    if (!sent) clearTimeout(deadline);
  }

  /** Starts queued requests on sessions with free streams; opens sessions as load needs them. */
  private pump(): void {
    if (this.closing) return;
    while (this.queue.length > 0) {
      const slot = this.leastBusyReadySlot();
      if (!slot) break;
      this.start(this.queue.shift()!, slot);
    }
    if (this.queue.length === 0) return;
    // Every usable session is full or still connecting: open another if allowed.
    const usable = this.slots.filter((s) => !s.draining);
    const connecting = usable.some((s) => !s.ready);
    if (usable.length < this.connections && (!connecting || usable.length === 0)) this.openSlot();
  }

  private leastBusyReadySlot(): Slot | undefined {
    let best: Slot | undefined;
    for (const slot of this.slots) {
      if (!slot.ready || slot.draining || slot.active >= slot.maxConcurrent) continue;
      if (!best || slot.active < best.active) best = slot;
    }
    // Spread load: while fewer sessions than allowed exist, open another once this one is busy.
    if (best && best.active > 0 && this.slots.filter((s) => !s.draining).length < this.connections && this.slots.every((s) => s.ready || s.draining)) {
      this.openSlot();
    }
    return best;
  }

  private openSlot(): void {
    const { ca, cert, key, passphrase, pfx } = this.options;
    let session: ClientHttp2Session;
    try {
      session = connect(this.authority, { ca, cert, key, passphrase, pfx });
    } catch (error) {
      // Our own certificate or key could not be loaded: every queued request fails the same way.
      const failure = transportErrorFrom(error, `${this.options.name}: cannot set up TLS`);
      this.logger.error('cannot open HTTP/2 session', { client: this.options.name, error: failure.message });
      for (const job of this.queue.splice(0)) this.settle(job, failure);
      return;
    }
    const slot: Slot = { id: this.nextSlotId++, session, ready: false, draining: false, active: 0, maxConcurrent: 1, jobs: new Set() };
    this.slots.push(slot);
    this.logger.debug('opening HTTP/2 session', { client: this.options.name, session: slot.id, origin: this.authority });

    session.on('connect', () => { slot.connected = true; });
    session.on('remoteSettings', (settings) => {
      // Before the first SETTINGS we send nothing; after it, the peer's limit is the law (RFC 9113 §5.1.2).
      slot.maxConcurrent = settings.maxConcurrentStreams ?? 100;
      if (!slot.ready) {
        slot.ready = true;
        this.logger.debug('HTTP/2 session ready', { client: this.options.name, session: slot.id, max_concurrent_streams: slot.maxConcurrent });
      }
      this.pump();
    });
    session.on('goaway', (errorCode, lastStreamID) => {
      slot.draining = true;
      slot.goawayLastStreamId = lastStreamID;
      this.logger.info('HTTP/2 GOAWAY received; draining the session', { client: this.options.name, session: slot.id, error_code: errorCode, last_stream_id: lastStreamID });
      this.pump();
    });
    session.on('error', (error) => {
      slot.failure = transportErrorFrom(error, `${this.options.name}: HTTP/2 session failed`);
      const log = slot.failure.tlsAuthFailure ? this.logger.error : this.logger.warn;
      log('HTTP/2 session error', { client: this.options.name, session: slot.id, code: slot.failure.code, error: slot.failure.message });
    });
    // A socket error is meant to reach 'error' and 'close' above, but when the peer refuses our client
    // certificate after a TLS 1.3 handshake, Node 24 destroys the session without emitting either.
    session.socket.on('error', (error: Error) => {
      slot.failure ??= transportErrorFrom(error, `${this.options.name}: connection failed`);
      setImmediate(() => {
        if (session.destroyed) this.onSlotClosed(slot);
      });
    });
    // A connection that does not come up within the request timeout is given up (its requests have timed out).
    const connectDeadline = setTimeout(() => {
      if (!slot.ready && !session.destroyed) {
        slot.failure ??= new Http2TransportError(`${this.options.name}: connection not established within ${this.options.requestTimeoutMs} ms`, 'ETIMEDOUT');
        session.destroy();
      }
    }, this.options.requestTimeoutMs);
    connectDeadline.unref();
    let resolveClosed!: () => void;
    this.closedSlots.set(slot, new Promise((resolve) => { resolveClosed = resolve; }));
    slot.closed = () => {
      clearTimeout(connectDeadline);
      resolveClosed();
    };
    session.on('close', () => this.onSlotClosed(slot));
    session.unref();
  }

  /** Runs once per session, from its 'close' event or from the socket-error fallback. */
  private onSlotClosed(slot: Slot): void {
    if (slot.finished) return;
    slot.finished = true;
    slot.closed?.();
    slot.draining = true;
    const index = this.slots.indexOf(slot);
    if (index !== -1) this.slots.splice(index, 1);
    this.closedSlots.delete(slot);
    this.logger.debug('HTTP/2 session closed', { client: this.options.name, session: slot.id });
    if (!slot.ready && slot.connected && !slot.failure && (this.options.cert !== undefined || this.options.pfx !== undefined)) {
      // A server that refuses a client certificate may just close after the handshake (Node's own
      // TLS server does, with no alert): with our certificate offered, that is the likely reason.
      slot.failure = new Http2TransportError(`${this.options.name}: the server closed the connection right after the TLS handshake; it probably refused our client certificate`, 'ECERTREFUSED', true);
      this.logger.error('HTTP/2 session closed before it was ready', { client: this.options.name, session: slot.id, error: slot.failure.message });
    }
    if (!slot.ready && this.queue.length > 0 && !this.slots.some((s) => !s.draining && s.ready)) {
      // The connection never came up. Queued requests get one more session; then they fail.
      const failure = slot.failure ?? new Http2TransportError(`${this.options.name}: connection closed before it was ready`, 'ESESSIONLOST');
      for (const job of [...this.queue]) {
        if (job.retries >= 1 || failure.tlsAuthFailure) {
          this.queue.splice(this.queue.indexOf(job), 1);
          this.settle(job, failure);
        } else {
          job.retries += 1;
        }
      }
    }
    this.pump();
  }

  private start(job: Job, slot: Slot): void {
    const { request } = job;
    // A flat [name, value, …] list rather than an object: node:http2 copies an object into a
    // null-prototype dictionary that the closed stream keeps until a full collection (bench, issue 6).
    const headers: string[] = [':method', request.method ?? 'POST', ':path', request.path];
    if (request.headers) for (const name in request.headers) headers.push(name, request.headers[name]);
    const body = request.body === undefined ? undefined : Buffer.isBuffer(request.body) ? request.body : Buffer.from(request.body);
    if (body !== undefined) headers.push('content-length', String(body.length));
    let stream: ClientHttp2Stream;
    try {
      stream = slot.session.request(headers, { endStream: body === undefined });
    } catch (error) {
      // The session went away between the check and the call: the stream never existed.
      slot.draining = true;
      this.requeueOrFail(job, transportErrorFrom(error, `${this.options.name}: cannot open a stream`));
      return;
    }
    job.stream = stream;
    slot.active += 1;
    slot.jobs.add(job);
    if (body !== undefined) stream.end(body);

    let status = 0;
    let responseHeaders: IncomingHttpHeaders | undefined;
    const chunks: Buffer[] = [];
    let received = 0;
    let ended = false;
    let streamError: unknown;

    const onResponse = (h: IncomingHttpHeaders): void => {
      responseHeaders = h;
      status = Number(h[':status']);
    };
    const onData = (chunk: Buffer): void => {
      received += chunk.length;
      if (received > this.maxResponseBytes) {
        streamError = new Http2TransportError(`${this.options.name}: answer larger than ${this.maxResponseBytes} bytes`, 'ERESPONSETOOLARGE');
        stream.close(constants.NGHTTP2_CANCEL);
        return;
      }
      chunks.push(chunk);
    };
    const onEnd = (): void => { ended = true; };
    const onError = (error: unknown): void => { streamError ??= error; };
    const onClose = (): void => {
      // node:http2 keeps a closed stream's objects alive until a full collection; without our
      // listeners it no longer reaches this request (job, promise, caller), which can then die young.
      stream.off('response', onResponse);
      stream.off('data', onData);
      stream.off('end', onEnd);
      stream.off('close', onClose);
      // An 'error' listener stays (an unheard one would throw), but one that holds nothing of ours.
      stream.on('error', ignoreStreamError);
      stream.off('error', onError);
      if (job.stream === stream) job.stream = undefined;
      slot.active -= 1;
      slot.jobs.delete(job);
      if (job.settled) {
        this.pump();
        return;
      }
      if (responseHeaders && ended && !(streamError instanceof Http2TransportError)) {
        const plain: Record<string, string | string[] | undefined> = {};
        for (const [name, value] of Object.entries(responseHeaders)) if (!name.startsWith(':')) plain[name] = value;
        this.settle(job, { status, headers: plain, body: Buffer.concat(chunks).toString('utf8') });
      } else {
        const failure = streamError instanceof Http2TransportError
          ? streamError
          : slot.failure ?? transportErrorFrom(streamError ?? new Error(`stream closed (code ${stream.rstCode})`), `${this.options.name}: request failed`);
        // A stream cancelled by Node itself means the connection is going down: use no more streams on it.
        if (stream.rstCode === constants.NGHTTP2_CANCEL || slot.session.destroyed || slot.session.closed) slot.draining = true;
        if (!responseHeaders && this.wasNotProcessed(stream, slot) && !failure.tlsAuthFailure) this.requeueOrFail(job, failure);
        else this.settle(job, failure);
      }
      this.pump();
    };
    stream.on('response', onResponse);
    stream.on('data', onData);
    stream.on('end', onEnd);
    stream.on('error', onError);
    stream.on('close', onClose);
  }

  /**
   * True when the server certainly did not act on the stream: refused (RFC 9113 §8.7), above a
   * GOAWAY's last-stream-id (§6.8), never sent, or lost with the connection before any answer
   * (no GOAWAY tells us more; for a push a duplicate wake-up costs less than a lost one).
   */
  private wasNotProcessed(stream: ClientHttp2Stream, slot: Slot): boolean {
    if (stream.rstCode === constants.NGHTTP2_REFUSED_STREAM) return true;
    if (stream.id === undefined) return true;
    if (slot.goawayLastStreamId !== undefined) return stream.id > slot.goawayLastStreamId;
    // The socket closed under the session: Node cancels its streams (we cancel only settled ones), then closes it.
    if (this.closing) return false;
    return stream.rstCode === constants.NGHTTP2_CANCEL || slot.session.destroyed || slot.session.closed;
  }

  private requeueOrFail(job: Job, failure: Http2TransportError): void {
    if (job.retries >= 1 || this.closing) {
      this.settle(job, failure);
      return;
    }
    job.retries += 1;
    job.stream = undefined;
    this.logger.debug('retrying a request its session did not process', { client: this.options.name, path: job.request.path, code: failure.code });
    this.queue.unshift(job);
  }
}
