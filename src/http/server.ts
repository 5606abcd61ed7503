/**
 * A small HTTP front on node:http: exact-path routing, bounded form bodies, text replies. Every
 * failure a client can cause is a 4xx with a reason; a bug is a 500 and a log line, never a crash.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Logger } from '../log.ts';

export interface HttpReply {
  status: number;
  body: string;
  contentType?: string;
  headers?: Record<string, string>;
}

export interface HttpRequest {
  method: string;
  path: string;
  query: URLSearchParams;
  headers: IncomingMessage['headers'];
  /** Parsed form fields (POST) */
  form: URLSearchParams;
  /** The peer's address as the socket sees it (a proxy's, behind one: see http.trust_proxy). */
  remoteAddress: string;
}

export type Route = (request: HttpRequest) => HttpReply | Promise<HttpReply>;

export class HttpError extends Error {
  readonly status: number;
  constructor(status: number, message: string) {
    super(message);
    this.status = status;
  }
}

export function text(status: number, body: string, headers?: Record<string, string>): HttpReply {
  return { status, body, contentType: 'text/plain; charset=utf-8', headers };
}

interface RouteEntry {
  method: string;
  match: (path: string) => boolean;
  route: Route;
}

export class HttpServer {
  private readonly routes: RouteEntry[] = [];
  private readonly logger: Logger;
  private readonly maxBodyBytes: number;
  private server: Server | undefined;

  constructor(logger: Logger, maxBodyBytes: number) {
    this.logger = logger;
    this.maxBodyBytes = maxBodyBytes;
  }

  add(method: 'GET' | 'POST', path: string | ((path: string) => boolean), route: Route): this {
    const match = typeof path === 'string' ? (candidate: string) => candidate === path : path;
    this.routes.push({ method, match, route });
    return this;
  }

  async listen(host: string, port: number): Promise<AddressInfo> {
    const server = createServer((req, res) => void this.handle(req, res));
    server.keepAliveTimeout = 30_000;
    server.headersTimeout = 15_000;
    server.requestTimeout = 30_000;
    this.server = server;
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, host, () => {
        server.off('error', reject);
        resolve();
      });
    });
    return server.address() as AddressInfo;
  }

  async close(): Promise<void> {
    const server = this.server;
    if (!server) return;
    this.server = undefined;
    await new Promise<void>((resolve) => {
      server.close(() => resolve());
      server.closeIdleConnections();
      setTimeout(() => server.closeAllConnections(), 5000).unref();
    });
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    let reply: HttpReply;
    try {
      reply = await this.route(req);
    } catch (error) {
      if (error instanceof HttpError) {
        reply = text(error.status, `ERROR\n${error.message}`);
      } else {
        this.logger.error('HTTP handler failed', { method: req.method, url: req.url, error });
        reply = text(500, 'ERROR\ninternal error');
      }
    }
    if (res.headersSent || res.destroyed) return;
    res.writeHead(reply.status, {
      'content-type': reply.contentType ?? 'text/plain; charset=utf-8',
      'content-length': Buffer.byteLength(reply.body),
      'cache-control': 'no-store',
      'x-content-type-options': 'nosniff',
      ...reply.headers,
    });
    res.end(req.method === 'HEAD' ? undefined : reply.body);
  }

  private async route(req: IncomingMessage): Promise<HttpReply> {
    let url: URL;
    try {
      url = new URL(req.url ?? '/', 'http://local');
    } catch {
      req.resume();
      throw new HttpError(400, 'the request target is not a valid URL path');
    }
    const path = url.pathname.length > 1 ? url.pathname.replace(/\/+$/, '') : url.pathname;
    const candidates = this.routes.filter((entry) => entry.match(path));
    if (candidates.length === 0) {
      req.resume();
      return text(404, 'ERROR\nno such endpoint');
    }
    const method = req.method === 'HEAD' ? 'GET' : (req.method ?? 'GET');
    const entry = candidates.find((candidate) => candidate.method === method);
    if (!entry) {
      req.resume();
      const allow = [...new Set(candidates.map((candidate) => candidate.method))].join(', ');
      return text(405, `ERROR\nmethod ${req.method} not allowed here (use ${allow})`, { allow });
    }
    const form = method === 'POST' ? await this.readForm(req) : new URLSearchParams();
    return entry.route({ method, path, query: url.searchParams, headers: req.headers, form, remoteAddress: req.socket.remoteAddress ?? '' });
  }

  private async readForm(req: IncomingMessage): Promise<URLSearchParams> {
    const type = (req.headers['content-type'] ?? '').split(';')[0].trim().toLowerCase();
    if (type !== '' && type !== 'application/x-www-form-urlencoded' && type !== 'text/plain') {
      req.resume();
      throw new HttpError(415, `content type ${type} is not accepted: send application/x-www-form-urlencoded`);
    }
    const declared = Number(req.headers['content-length'] ?? 0);
    if (declared > this.maxBodyBytes) {
      req.resume();
      throw new HttpError(413, `body larger than ${this.maxBodyBytes} bytes`);
    }
    const chunks: Buffer[] = [];
    let size = 0;
    for await (const chunk of req as AsyncIterable<Buffer>) {
      size += chunk.length;
      if (size > this.maxBodyBytes) {
        req.resume();
        throw new HttpError(413, `body larger than ${this.maxBodyBytes} bytes`);
      }
      chunks.push(chunk);
    }
    const body = Buffer.concat(chunks).toString('utf8');
    if (body.includes('\uFFFD')) throw new HttpError(400, 'body is not valid UTF-8');
    return new URLSearchParams(body);
  }
}
