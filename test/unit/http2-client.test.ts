/**
 * The shared HTTP/2 client against a real node:http2 TLS server on loopback: session reuse,
 * SETTINGS_MAX_CONCURRENT_STREAMS, GOAWAY and REFUSED_STREAM retries, timeouts, TLS failures.
 */
import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { constants, createSecureServer, type Http2SecureServer, type Http2Session, type ServerHttp2Stream, type IncomingHttpHeaders, type SecureServerOptions } from 'node:http2';
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { createServer as createNetServer, connect as netConnect, type Socket } from 'node:net';
import { Http2Client, Http2TransportError, type Http2ClientOptions } from '../../src/providers/http2-client.ts';
import { silentLogger } from '../../src/log.ts';
import { closedPort } from '../support/ports.ts';
import { testPki } from '../support/tls.ts';
import { testTempDir } from '../support/temp-dir.ts';

type Handler = (stream: ServerHttp2Stream, headers: IncomingHttpHeaders, body: string, session: Http2Session) => void;

interface TestServer {
  origin: string;
  sessions: Set<Http2Session>;
  sessionCount: () => number;
  requests: Array<{ headers: IncomingHttpHeaders; body: string; streamId: number }>;
  close(): Promise<void>;
}

const closers: Array<() => Promise<void>> = [];
after(async () => {
  await Promise.all(closers.map((close) => close()));
});

async function startServer(handler: Handler, options: Partial<SecureServerOptions> = {}): Promise<TestServer> {
  const pki = testPki();
  const server: Http2SecureServer = createSecureServer({ cert: pki.serverCert, key: pki.serverKey, ...options });
  const sessions = new Set<Http2Session>();
  let opened = 0;
  const requests: TestServer['requests'] = [];
  server.on('session', (session) => {
    opened += 1;
    sessions.add(session);
    session.on('close', () => sessions.delete(session));
    session.on('error', () => {});
  });
  server.on('stream', (stream, headers) => {
    const chunks: Buffer[] = [];
    stream.on('error', () => {});
    stream.on('data', (chunk: Buffer) => chunks.push(chunk));
    stream.on('end', () => {
      const body = Buffer.concat(chunks).toString('utf8');
      requests.push({ headers, body, streamId: stream.id! });
      handler(stream, headers, body, stream.session!);
    });
  });
  server.on('tlsClientError', () => {});
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as { port: number };
  const close = async () => {
    for (const session of sessions) session.destroy();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  };
  closers.push(close);
  return { origin: `https://127.0.0.1:${port}`, sessions, sessionCount: () => opened, requests, close };
}

function client(origin: string, extra: Partial<Http2ClientOptions> = {}): Http2Client {
  const created = new Http2Client({ name: 'test', origin, ca: testPki().ca, requestTimeoutMs: 5000, logger: silentLogger, ...extra });
  closers.push(() => created.close());
  return created;
}

const ok: Handler = (stream, headers, body) => {
  stream.respond({ ':status': 200, 'x-path': String(headers[':path']), 'content-type': 'application/json' });
  stream.end(JSON.stringify({ echoed: body }));
};

describe('Http2Client', () => {
  test('a POST carries method, path, headers and body and returns status, headers and body', async () => {
    const server = await startServer((stream, headers, body) => {
      stream.respond({ ':status': 201, 'x-seen-header': String(headers['x-custom']), 'x-method': String(headers[':method']) });
      stream.end(`got ${body}`);
    });
    const response = await client(server.origin).request({ path: '/3/device/abc', headers: { 'x-custom': 'yes' }, body: '{"a":1}' });
    assert.equal(response.status, 201);
    assert.equal(response.headers['x-seen-header'], 'yes');
    assert.equal(response.headers['x-method'], 'POST');
    assert.equal(response.headers[':status'], undefined, 'pseudo-headers are left out');
    assert.equal(response.body, 'got {"a":1}');
    assert.equal(server.requests[0].headers[':path'], '/3/device/abc');
    assert.equal(server.requests[0].headers[':authority'], server.origin.slice('https://'.length));
  });

  test('an error status is an answer, not an exception', async () => {
    const server = await startServer((stream) => {
      stream.respond({ ':status': 410 });
      stream.end('{"reason":"Unregistered"}');
    });
    const response = await client(server.origin).request({ path: '/x', body: '' });
    assert.equal(response.status, 410);
    assert.equal(response.body, '{"reason":"Unregistered"}');
  });

  test('requests reuse one session, opened only when the first request is made', async () => {
    const server = await startServer(ok);
    const http = client(server.origin);
    assert.equal(server.sessionCount(), 0);
    for (let i = 0; i < 5; i += 1) assert.equal((await http.request({ path: `/n/${i}`, body: 'x' })).status, 200);
    await Promise.all(Array.from({ length: 20 }, (_, i) => http.request({ path: `/p/${i}`, body: 'x' })));
    assert.equal(server.sessionCount(), 1);
    assert.equal(server.requests.length, 25);
  });

  test('no more streams than the server allows are open at once; the rest wait their turn', async () => {
    let open = 0;
    let highest = 0;
    const server = await startServer((stream) => {
      open += 1;
      highest = Math.max(highest, open);
      setTimeout(() => {
        open -= 1;
        stream.respond({ ':status': 200 });
        stream.end();
      }, 20);
    }, { settings: { maxConcurrentStreams: 2 } });
    const http = client(server.origin);
    const answers = await Promise.all(Array.from({ length: 10 }, (_, i) => http.request({ path: `/q/${i}`, body: 'x' })));
    assert.deepEqual(answers.map((a) => a.status), Array(10).fill(200));
    assert.equal(highest, 2);
  });

  test('with connections = 3 a burst of requests is spread over three sessions', async () => {
    const seenSessions = new Set<Http2Session>();
    const server = await startServer((stream, _headers, _body, session) => {
      seenSessions.add(session);
      setTimeout(() => { stream.respond({ ':status': 200 }); stream.end(); }, 30);
    }, { settings: { maxConcurrentStreams: 2 } });
    const http = client(server.origin, { connections: 3 });
    await Promise.all(Array.from({ length: 30 }, (_, i) => http.request({ path: `/s/${i}`, body: 'x' })));
    assert.equal(server.sessionCount(), 3);
    assert.equal(seenSessions.size, 3);
  });

  test('a request above a GOAWAY last-stream-id is retried once on a new session', async () => {
    let held: ServerHttp2Stream | undefined;
    const server = await startServer((stream, headers, _body, session) => {
      if (headers[':path'] === '/first') {
        held = stream;
        return;
      }
      if (server.sessionCount() === 1 && held) {
        // The second request arrived on the first session: answer the first, refuse everything after it.
        held.respond({ ':status': 200 });
        held.end();
        session.goaway(constants.NGHTTP2_NO_ERROR, held.id!);
        stream.close(constants.NGHTTP2_REFUSED_STREAM);
        return;
      }
      ok(stream, headers, '', session);
    });
    const http = client(server.origin);
    const first = http.request({ path: '/first', body: 'x' });
    await waitFor(() => held !== undefined);
    const second = await http.request({ path: '/second', body: 'x' });
    assert.equal((await first).status, 200);
    assert.equal(second.status, 200);
    assert.equal(server.sessionCount(), 2);
    assert.equal(server.requests.filter((r) => r.headers[':path'] === '/second').length, 2);
  });

  test('a GOAWAY with an error code drops the session and unprocessed requests go to a new one', async () => {
    let firstStream: number | undefined;
    let goneAway = false;
    const server = await startServer((stream, headers, body, session) => {
      if (firstStream === undefined) {
        firstStream = stream.id;
        ok(stream, headers, body, session);
        return;
      }
      if (!goneAway) {
        goneAway = true;
        // Only the first stream was processed; this one is above the last-stream-id.
        session.goaway(constants.NGHTTP2_INTERNAL_ERROR, firstStream);
        return;
      }
      ok(stream, headers, body, session);
    });
    const http = client(server.origin);
    assert.equal((await http.request({ path: '/a', body: 'x' })).status, 200);
    assert.equal((await http.request({ path: '/b', body: 'x' })).status, 200);
    assert.equal(server.sessionCount(), 2);
    assert.equal(server.requests.filter((r) => r.headers[':path'] === '/b').length, 2);
  });

  test('a stream refused by the server is retried once and then succeeds', async () => {
    let refusals = 0;
    const server = await startServer((stream, headers, body, session) => {
      if (refusals === 0) {
        refusals += 1;
        stream.close(constants.NGHTTP2_REFUSED_STREAM);
        return;
      }
      ok(stream, headers, body, session);
    });
    const answer = await client(server.origin).request({ path: '/r', body: 'x' });
    assert.equal(answer.status, 200);
    assert.equal(server.requests.length, 2);
  });

  test('a request refused twice fails with a transport error instead of retrying forever', async () => {
    const server = await startServer((stream) => stream.close(constants.NGHTTP2_REFUSED_STREAM));
    await assert.rejects(client(server.origin).request({ path: '/r', body: 'x' }), (error: unknown) => {
      assert.ok(error instanceof Http2TransportError);
      return true;
    });
    assert.equal(server.requests.length, 2);
  });

  test('a request the server may have processed before the connection died is not retried', async () => {
    const server = await startServer((_stream, _headers, _body, session) => {
      session.goaway(constants.NGHTTP2_NO_ERROR, 1);
      setTimeout(() => session.destroy(), 20);
    });
    await assert.rejects(client(server.origin).request({ path: '/maybe', body: 'x' }), Http2TransportError);
    assert.equal(server.requests.length, 1);
  });

  test('a request in flight when the connection drops without GOAWAY is retried once on a new session', async () => {
    // A TCP relay in front of the server lets the test cut a connection with no HTTP/2 goodbye at all.
    const relayed = new Set<Socket>();
    let cut = false;
    const server = await startServer((stream, headers, body, session) => {
      if (!cut) {
        cut = true;
        for (const socket of relayed) socket.destroy();
        return;
      }
      ok(stream, headers, body, session);
    });
    const target = new URL(server.origin);
    const relay = createNetServer((inbound) => {
      relayed.add(inbound);
      const outbound = netConnect(Number(target.port), target.hostname);
      inbound.pipe(outbound).pipe(inbound);
      const done = () => { inbound.destroy(); outbound.destroy(); relayed.delete(inbound); };
      inbound.on('error', done).on('close', done);
      outbound.on('error', done).on('close', done);
    });
    await new Promise<void>((resolve) => relay.listen(0, '127.0.0.1', resolve));
    closers.push(() => new Promise<void>((resolve) => relay.close(() => resolve())));
    const { port } = relay.address() as { port: number };
    const answer = await client(`https://127.0.0.1:${port}`).request({ path: '/lost', body: 'x' });
    assert.equal(answer.status, 200);
    assert.equal(server.requests.length, 2);
  });

  test('a request without an answer in time fails with ETIMEDOUT', async () => {
    const server = await startServer(() => { /* never answers */ });
    await assert.rejects(client(server.origin, { requestTimeoutMs: 200 }).request({ path: '/slow', body: 'x' }), (error: unknown) => {
      assert.ok(error instanceof Http2TransportError);
      assert.equal(error.code, 'ETIMEDOUT');
      return true;
    });
  });

  test('a refused connection fails with ECONNREFUSED', async () => {
    const refusing = await closedPort();
    try {
      await assert.rejects(client(`https://127.0.0.1:${refusing.port}`).request({ path: '/', body: 'x' }), (error: unknown) => {
        assert.ok(error instanceof Http2TransportError);
        assert.equal(error.code, 'ECONNREFUSED');
        assert.equal(error.tlsAuthFailure, false);
        return true;
      });
    } finally {
      await refusing.release();
    }
  });

  test('a server certificate from an untrusted CA fails, and is not reported as our credentials', async () => {
    const server = await startServer(ok);
    const otherCa = (await import('node:tls')).rootCertificates[0];
    await assert.rejects(client(server.origin, { ca: otherCa }).request({ path: '/', body: 'x' }), (error: unknown) => {
      assert.ok(error instanceof Http2TransportError);
      assert.equal(error.tlsAuthFailure, false);
      return true;
    });
    assert.equal(server.requests.length, 0);
  });

  test('a server that requires a client certificate refuses us without one, as a TLS auth failure', async () => {
    const pki = testPki();
    const server = await startServer(ok, { ca: pki.ca, requestCert: true, rejectUnauthorized: true });
    await assert.rejects(client(server.origin).request({ path: '/', body: 'x' }), (error: unknown) => {
      assert.ok(error instanceof Http2TransportError);
      assert.equal(error.tlsAuthFailure, true, `expected a TLS auth failure, got ${error.code}: ${error.message}`);
      return true;
    });
  });

  test('a client certificate signed by the CA the server trusts is accepted', async () => {
    const pki = testPki();
    const identity = pki.clientCertificate('http2-client-test');
    const server = await startServer(ok, { ca: pki.ca, requestCert: true, rejectUnauthorized: true });
    const answer = await client(server.origin, { cert: identity.cert, key: identity.key }).request({ path: '/', body: 'x' });
    assert.equal(answer.status, 200);
  });

  test('a client certificate from a CA the server does not trust is reported as a TLS auth failure', async () => {
    const pki = testPki();
    const server = await startServer(ok, { ca: pki.ca, requestCert: true, rejectUnauthorized: true });
    const dir = testTempDir('http2-untrusted-');
    execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-days', '1',
      '-subj', '/CN=untrusted', '-keyout', join(dir, 'key.pem'), '-out', join(dir, 'cert.pem')], { stdio: 'ignore' });
    const http = client(server.origin, { cert: readFileSync(join(dir, 'cert.pem')), key: readFileSync(join(dir, 'key.pem')) });
    await assert.rejects(http.request({ path: '/', body: 'x' }), (error: unknown) => {
      assert.ok(error instanceof Http2TransportError);
      assert.equal(error.tlsAuthFailure, true, `got ${error.code}: ${error.message}`);
      return true;
    });
    assert.equal(server.requests.length, 0);
  });

  test('a client certificate key that cannot be decrypted is reported as a TLS auth failure', async () => {
    const pki = testPki();
    const identity = pki.clientCertificate('http2-client-locked', { passphrase: 'right' });
    const server = await startServer(ok);
    await assert.rejects(client(server.origin, { cert: identity.cert, key: identity.key, passphrase: 'wrong' }).request({ path: '/', body: 'x' }), (error: unknown) => {
      assert.ok(error instanceof Http2TransportError);
      assert.equal(error.tlsAuthFailure, true, `got ${error.code}: ${error.message}`);
      return true;
    });
  });

  test('close waits for requests on the way and refuses new ones', async () => {
    const server = await startServer((stream) => setTimeout(() => { stream.respond({ ':status': 200 }); stream.end('late'); }, 50));
    const http = client(server.origin);
    const pending = http.request({ path: '/late', body: 'x' });
    await waitFor(() => server.requests.length === 1);
    await http.close();
    assert.equal((await pending).body, 'late');
    await assert.rejects(http.request({ path: '/after', body: 'x' }), (error: unknown) => error instanceof Http2TransportError && error.code === 'ECLIENTCLOSED');
    assert.equal(http.sessionCount, 0);
  });
});

async function waitFor(condition: () => boolean, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error('condition not met in time');
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}
