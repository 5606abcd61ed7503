/**
 * The component's reconnect policy when the XMPP server cannot be reached (README "Attaching to an
 * XMPP server"): exponential backoff from reconnect_initial_ms, capped at reconnect_max_ms, with
 * jitter. The server is a loopback port held closed, so every attempt is refused. The delays are
 * read from the component's own log lines (one per attempt at debug level), never measured.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { startAppServer } from '../support/app-server.ts';
import { closedPort } from '../support/ports.ts';

const INITIAL_MS = 20;
const MAX_MS = 160;
const ATTEMPTS = 14;

test('reconnect delays double from reconnect_initial_ms, stop at reconnect_max_ms, and are jittered', async (t) => {
  const refusing = await closedPort();
  t.after(() => refusing.release());
  const app = await startAppServer({ xmpp: { server_port: refusing.port, reconnect_initial_ms: INITIAL_MS, reconnect_max_ms: MAX_MS } });
  t.after(() => app.stop());
  const retrying = /cannot reach the XMPP server, retrying .*attempt=(\d+) in_ms=(\d+)/;
  await app.waitForCount(retrying, ATTEMPTS);

  const delays = new Map<number, number>();
  for (const line of app.logLines) {
    const match = retrying.exec(line);
    if (match) delays.set(Number(match[1]), Number(match[2]));
  }
  for (let attempt = 1; attempt <= ATTEMPTS; attempt++) {
    const nominal = Math.min(MAX_MS, INITIAL_MS * 2 ** (attempt - 1));
    const delay = delays.get(attempt);
    assert.ok(delay !== undefined, `attempt ${attempt} was logged`);
    // ±20 % jitter around the nominal step (±1 for rounding).
    assert.ok(delay >= Math.floor(nominal * 0.8) - 1 && delay <= Math.ceil(nominal * 1.2) + 1, `attempt ${attempt}: ${delay} ms is not ${nominal} ms ± 20 %`);
  }
  const capped = [...delays].filter(([attempt]) => INITIAL_MS * 2 ** (attempt - 1) >= MAX_MS).map(([, delay]) => delay);
  assert.ok(capped.length >= 8, 'enough attempts at the cap to see the jitter');
  assert.ok(Math.max(...capped) <= Math.ceil(MAX_MS * 1.2) + 1, 'never beyond the cap (plus its jitter)');
  assert.ok(new Set(capped).size > 1, `capped delays are jittered, not all ${capped[0]} ms`);
  assert.equal(app.server.xmpp.component.state === 'online', false);
  // Only the first attempt and every tenth are warnings: an unreachable server does not flood the log.
  assert.equal(app.countLog(/WARN .*cannot reach the XMPP server/), [...delays.keys()].filter((attempt) => attempt === 1 || attempt % 10 === 0).length);
});
