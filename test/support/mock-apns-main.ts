/**
 * The mock APNS (mock-apns.ts) as its own process, for the benchmark and for trying a config by hand.
 *
 *   node --disable-warning=ExperimentalWarning test/support/mock-apns-main.ts [options]
 *
 * Prints ONE JSON line on stdout once listening, with what an `[apps.NAME]` table needs:
 *   {"origin":"https://127.0.0.1:PORT","caFile":"…/ca.pem","pid":…,"auth":"token",
 *    "keyFile":"…/AuthKey.p8","keyId":"MOCKKEY001","teamId":"MOCKTEAM01"}
 * (with --auth certificate: "certFile" and "keyFile" of a client certificate instead of the .p8).
 * Options:
 *   --auth token|certificate   (default token)      --host H (default 127.0.0.1)   --port N (default free)
 *   --max-concurrent-streams N (default Node's)     --latency-ms N (answer every push after N ms)
 *   --receipts   one more line per request: {"r":"<device token>","t":<ms, CLOCK_MONOTONIC, comparable across processes>}
 *   --delivery-receipts   receipts only for requests answered 200 (with the fault modes below)
 *   --fault-rate F        answer this fraction (0…1) of requests 503
 *   --outage-s N --outage-after-requests K   answer everything 503 for N seconds from the K-th request on
 * Stops on SIGTERM/SIGINT, and when stdin closes if started with --exit-with-stdin.
 */
import { rmSync } from 'node:fs';
import { dirname } from 'node:path';
import { parseArgs } from 'node:util';
import { createTestApnsKey, startMockApns } from './mock-apns.ts';
import { testPki } from './tls.ts';

const { values } = parseArgs({
  options: {
    auth: { type: 'string', default: 'token' },
    host: { type: 'string', default: '127.0.0.1' },
    port: { type: 'string', default: '0' },
    'max-concurrent-streams': { type: 'string' },
    'latency-ms': { type: 'string' },
    receipts: { type: 'boolean', default: false },
    'delivery-receipts': { type: 'boolean', default: false },
    'fault-rate': { type: 'string' },
    'outage-s': { type: 'string' },
    'outage-after-requests': { type: 'string' },
    'exit-with-stdin': { type: 'boolean', default: false },
  },
});

if (values.auth !== 'token' && values.auth !== 'certificate') throw new Error(`--auth must be token or certificate, got ${values.auth}`);
const auth = values.auth;
const { keyFile, keyId, teamId, privateKey } = createTestApnsKey({ keyId: 'MOCKKEY001', teamId: 'MOCKTEAM01' });
const credentials: Record<string, string> = {};
if (auth === 'token') {
  Object.assign(credentials, { keyFile, keyId, teamId });
} else {
  const identity = testPki().clientCertificate('mock-apns-client');
  Object.assign(credentials, { certFile: identity.certFile, keyFile: identity.keyFile, p12File: identity.p12File });
}

const receipts = values.receipts;
// Receipts are stamped when each request arrives but written in batches, once per turn of the
// event loop: one pipe write per request would cost the mock more than the request itself, and
// under a benchmark the mock shares the CPU with the server it measures.
let pendingReceipts = '';
const flushReceipts = () => {
  if (pendingReceipts === '') return;
  process.stdout.write(pendingReceipts);
  pendingReceipts = '';
};
const receipt = (token: string) => {
  if (pendingReceipts === '') setImmediate(flushReceipts);
  pendingReceipts += `{"r":"${token}","t":${Number(process.hrtime.bigint()) / 1e6}}\n`;
};
const mock = await startMockApns({
  auth,
  keys: [{ keyId, teamId, key: privateKey }],
  host: values.host,
  port: Number(values.port),
  maxConcurrentStreams: values['max-concurrent-streams'] !== undefined ? Number(values['max-concurrent-streams']) : undefined,
  record: false,
  onRequest: receipts && !values['delivery-receipts'] ? receipt : outageTrigger(),
  onDelivered: receipts && values['delivery-receipts'] ? receipt : undefined,
  faultRate: values['fault-rate'] !== undefined ? Number(values['fault-rate']) : undefined,
});

function outageTrigger(): ((token: string) => void) | undefined {
  if (values['outage-s'] === undefined) return undefined;
  const durationMs = Number(values['outage-s']) * 1000;
  const after = Number(values['outage-after-requests'] ?? '0');
  let seen = 0;
  return () => {
    seen += 1;
    if (seen === after + 1) {
      mock.startOutage(durationMs);
      process.stderr.write(`mock-apns: outage of ${durationMs / 1000} s starts at request ${seen}\n`);
    }
  };
}
if (values['latency-ms'] !== undefined) mock.setDefaultBehaviour({ kind: 'slow', delayMs: Number(values['latency-ms']) });

process.stdout.write(JSON.stringify({ origin: mock.origin, caFile: mock.caFile, pid: process.pid, auth, ...credentials }) + '\n');

let stopping = false;
const stop = async () => {
  if (stopping) return;
  stopping = true;
  await mock.close();
  flushReceipts();
  // The key and the throwaway CA were made for this process only.
  rmSync(dirname(keyFile), { recursive: true, force: true });
  rmSync(testPki().dir, { recursive: true, force: true });
  process.exit(0);
};
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
if (values['exit-with-stdin']) {
  process.stdin.on('end', stop);
  process.stdin.on('close', stop);
  process.stdin.resume();
}
