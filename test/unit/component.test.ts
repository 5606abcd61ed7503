/**
 * The component connection against a scripted TCP peer on loopback: the connect + handshake
 * deadline, the backoff that starts over only after a stable stream, and back-pressure.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { createServer, type Server, type Socket } from 'node:net';
import type { AddressInfo } from 'node:net';
import { Element } from 'ltx';
import { silentLogger, type Logger } from '../../src/log.ts';
import { Component, type ComponentOptions } from '../../src/xmpp/component.ts';

const HEADER = `<?xml version='1.0'?><stream:stream xmlns='jabber:component:accept' xmlns:stream='http://etherx.jabber.org/streams' id='s1' from='push.test'>`;

async function until(condition: () => boolean, what: string, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) assert.fail(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

async function peer(onConnection: (socket: Socket) => void): Promise<{ server: Server; port: number; connections: Socket[] }> {
  const connections: Socket[] = [];
  const server = createServer((socket) => {
    connections.push(socket);
    socket.on('error', () => {});
    onConnection(socket);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { server, port: (server.address() as AddressInfo).port, connections };
}

/** Answers the header and accepts any handshake. */
function handshaking(socket: Socket, afterHandshake: (socket: Socket) => void = () => {}): void {
  let seen = '';
  socket.on('data', (chunk) => {
    const before = seen.includes('</handshake>');
    seen += String(chunk);
    if (seen.includes('<stream:stream') && !seen.includes('HEADER-SENT')) {
      seen += 'HEADER-SENT';
      socket.write(HEADER);
    }
    if (!before && seen.includes('</handshake>')) {
      socket.write('<handshake/>');
      afterHandshake(socket);
    }
  });
}

function component(port: number, options: Partial<ComponentOptions> = {}, logger: Logger = silentLogger): Component {
  return new Component({
    jid: 'push.test', host: '127.0.0.1', port, secret: 's', reconnectInitialMs: 20, reconnectMaxMs: 100, authFailureRetryMs: 1000, maxStanzaBytes: 65536,
    ...options,
  }, logger);
}

test('a peer that never answers the stream header is given up after connect_timeout_ms and retried', async () => {
  const { server, port, connections } = await peer(() => {});
  const c = component(port, { connectTimeoutMs: 150 });
  c.start();
  try {
    await until(() => connections.length >= 2, 'a second attempt');
    assert.match(c.lastError ?? '', /no handshake within 150 ms/);
    assert.notEqual(c.state, 'online');
  } finally {
    await c.stop();
    server.close();
  }
});

test('a stream dropped right after the handshake does not reset the backoff; one that stayed up does', async () => {
  let keepOpen = false;
  const { server, port, connections } = await peer((socket) => handshaking(socket, (s) => {
    if (!keepOpen) setImmediate(() => s.destroy());
  }));
  const c = component(port, { stableAfterMs: 100 });
  c.start();
  try {
    await until(() => connections.length >= 4, 'four short-lived streams');
    assert.ok(c.consecutiveFailures >= 3, `failures ${c.consecutiveFailures}`);
    keepOpen = true;
    await until(() => c.state === 'online' && c.consecutiveFailures === 0, 'a stable stream resetting the backoff');
  } finally {
    await c.stop();
    server.close();
  }
});

test('while the peer does not read, the outbox stays bounded, refuses beyond it with one warning, and delivers what it accepted', async () => {
  let peerSocket: Socket | undefined;
  let received = 0;
  let counting = false;
  const { server, port } = await peer((socket) => handshaking(socket, (s) => {
    peerSocket = s;
    s.pause();
    counting = true;
  }));
  const warnings: string[] = [];
  const logger: Logger = { ...silentLogger, warn: (message) => { warnings.push(message); }, child: () => logger };
  const maxOutboxBytes = 256 * 1024;
  const c = component(port, { maxOutboxBytes }, logger);
  c.start();
  try {
    await until(() => c.state === 'online' && peerSocket !== undefined, 'online');
    peerSocket!.on('data', (chunk: Buffer) => {
      if (counting) received += chunk.length;
    });
    const stanza = new Element('message', { to: 'x@y' }).c('body').t('z'.repeat(60 * 1024)).root().toString();
    let accepted = 0;
    let refused = 0;
    for (let round = 0; round < 2000 && refused < 10; round += 1) {
      for (let i = 0; i < 8; i += 1) {
        if (c.send(stanza)) accepted += stanza.length;
        else refused += 1;
      }
      assert.ok(c.pendingBytes <= maxOutboxBytes, `outbox holds ${c.pendingBytes}`);
      await new Promise((resolve) => setImmediate(resolve));
    }
    assert.ok(refused >= 10, 'the outbox filled up');
    assert.equal(warnings.filter((line) => /outbox full/.test(line)).length, 1);
    // handshake bytes were read before pausing; count only what follows
    peerSocket!.resume();
    await until(() => received >= accepted, `all ${accepted} accepted bytes to arrive (got ${received})`, 30_000);
  } finally {
    await c.stop();
    server.close();
  }
});
