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

interface SeenStanza { text: string; at: number; batch: number }

/**
 * A component with read coalescing, online against a scripted peer: `server` is the peer's side of
 * the stream, `seen` each stanza's body text, when it was emitted and which synchronous run of
 * emits (one parsed read) it was part of.
 */
async function coalescing(
  readCoalesceMs: number,
  scenario: (world: { server: Socket; component: Component; seen: SeenStanza[] }) => Promise<void>,
  options: { destroyPeerFirst?: boolean; peerSide?: (socket: Socket) => void } = {},
): Promise<void> {
  let server!: Socket;
  const p = await peer((socket) => handshaking(socket, (s) => {
    server = s;
    options.peerSide?.(s);
  }));
  const c = component(p.port, { readCoalesceMs });
  const seen: SeenStanza[] = [];
  let batch = 0;
  let batchOpen = false;
  c.on('stanza', (element) => {
    if (!batchOpen) {
      batchOpen = true;
      batch += 1;
      queueMicrotask(() => { batchOpen = false; });
    }
    seen.push({ text: element.getChildText('body') ?? '', at: performance.now(), batch });
  });
  c.start();
  try {
    await until(() => c.state === 'online', 'online');
    await scenario({ server, component: c, seen });
  } finally {
    if (options.destroyPeerFirst !== false) for (const socket of p.connections) socket.destroy();
    await c.stop();
    p.server.close();
  }
}

const message = (text: string) => `<message to='push.test'><body>${text}</body></message>`;
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

test('with read_coalesce_ms, stanzas arriving within the window after a read are held and handled in one batch, in order', async () => {
  await coalescing(400, async ({ server, seen }) => {
    server.write(message('first'));
    await until(() => seen.length === 1, 'the first stanza');
    for (let i = 0; i < 5; i++) {
      server.write(message(`held-${i}`));
      await sleep(5);
    }
    await until(() => seen.length === 6, 'the held stanzas');
    assert.deepEqual(seen.map((s) => s.text), ['first', 'held-0', 'held-1', 'held-2', 'held-3', 'held-4']);
    assert.ok(seen[1].at - seen[0].at >= 390, `held for ${Math.round(seen[1].at - seen[0].at)} ms, not the 400 ms window`);
    assert.equal(new Set(seen.slice(1).map((s) => s.batch)).size, 1, 'the held stanzas were handled in one synchronous batch');
  });
});

test('with read_coalesce_ms, a stanza after a quiet spell is read at once', async () => {
  await coalescing(400, async ({ server, seen }) => {
    server.write(message('before'));
    await until(() => seen.length === 1, 'the first stanza');
    await sleep(600);
    const sentAt = performance.now();
    server.write(message('after the quiet spell'));
    await until(() => seen.length === 2, 'the second stanza');
    assert.ok(seen[1].at - sentAt < 300, `took ${Math.round(seen[1].at - sentAt)} ms: it waited for a window that had ended`);
  });
});

test('with read_coalesce_ms, a stanza split across held reads is reassembled intact (the reused read buffer is copied)', async () => {
  await coalescing(30, async ({ server, seen }) => {
    const body = 'é'.repeat(3000) + 'x'.repeat(3000);
    const whole = Buffer.from(message(body) + message('next'));
    const cut = 4001; // inside the first stanza and inside a two-byte character
    server.write(whole.subarray(0, cut));
    await sleep(100);
    server.write(whole.subarray(cut));
    await until(() => seen.length === 2, 'both stanzas');
    assert.equal(seen[0].text, body);
    assert.equal(seen[1].text, 'next');
  });
});

test('with read_coalesce_ms, a read that fills the buffer is not held: a large backlog is read straight through', async () => {
  await coalescing(400, async ({ server, seen }) => {
    const count = 4000; // ≈ 240 KB: four full reads of 64 KB
    let backlog = '';
    for (let i = 0; i < count; i++) backlog += message(`m${i}`);
    server.write(backlog);
    await until(() => seen.length === count, 'the whole backlog');
    assert.equal(seen.at(-1)?.text, `m${count - 1}`);
    assert.ok(seen.at(-1)!.at - seen[0].at < 400 * 2, `the backlog took ${Math.round(seen.at(-1)!.at - seen[0].at)} ms: full reads were held`);
  });
});

test('stop() while a read is held still ends the stream cleanly, without waiting for the forced close', async () => {
  const closesOnRequest = (s: Socket) => s.on('data', (chunk) => { if (String(chunk).includes('</stream:stream>')) s.end('</stream:stream>'); });
  await coalescing(10_000, async ({ server, component: c, seen }) => {
    server.write(message('holds the socket'));
    await until(() => seen.length === 1, 'the stanza');
    const stopping = performance.now();
    await c.stop();
    assert.ok(performance.now() - stopping < 1500, `stop() took ${Math.round(performance.now() - stopping)} ms: the held socket never saw the server close`);
  }, { destroyPeerFirst: false, peerSide: closesOnRequest });
});
