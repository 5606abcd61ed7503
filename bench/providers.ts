/**
 * The provider side of a run: the app's config table, and for `apns` the APNS mock (HTTP/2 over TLS,
 * test/support/mock-apns-main.ts) in its own process. With `--receipts` the mock prints one line per
 * request it receives, stamped with CLOCK_MONOTONIC (shared by every process on the machine), which
 * gives the delivery latency: publish written by the load generator → request received by the mock.
 */
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Child } from './children.ts';
import { ErrorTally, Samples } from './stats.ts';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');

export interface DeliveryReport {
  latency: Samples;
  errors: ErrorTally;
  /** Publishes never matched to a receipt (a publish that rode along with one in flight has none). */
  unmatched: number;
}

export interface DeliveryTracker {
  /** A publish for this token left the load generator (monotonic ms). */
  sent(counted: boolean, token: string, monotonicMs: number): void;
  /** Waits for the last receipts, then matches what is left. */
  collect(allowedUnmatched: number): Promise<DeliveryReport>;
  /** Forgets every publish and receipt so far, for a second push phase against the same mock. */
  reset(): void;
}

/** What a client of the APNS mock needs (the bench's own baseline forwarder reads it). */
export interface ApnsMockInfo {
  origin: string;
  caFile: string;
  keyFile: string;
  keyId: string;
  teamId: string;
  topic: string;
}

export interface ProviderSetup {
  /** The body of `[apps.bench]` in the generated config. */
  appTable: string;
  delivery: DeliveryTracker | undefined;
  /** For `apns`: where the mock listens and the credentials it accepts. */
  apns?: ApnsMockInfo;
  pid: number | undefined;
  stop(): Promise<void>;
}

/**
 * Publishes wait per device token, oldest first; a receipt settles the oldest. When the server
 * coalesces two publishes for one node into one request, the receipt goes to the first, which is
 * the one that caused it.
 */
class ReceiptMatcher implements DeliveryTracker {
  private waiting = new Map<string, Array<{ at: number; counted: boolean }>>();
  private latency = new Samples();
  private errors = new ErrorTally();
  private lastReceiptAt = 0;

  reset(): void {
    this.waiting = new Map();
    this.latency = new Samples();
    this.errors = new ErrorTally();
    this.lastReceiptAt = 0;
  }

  sent(counted: boolean, token: string, at: number): void {
    const list = this.waiting.get(token);
    if (list) list.push({ at, counted });
    else this.waiting.set(token, [{ at, counted }]);
  }

  receipt(token: string, at: number): void {
    this.lastReceiptAt = performance.now();
    const list = this.waiting.get(token);
    const first = list?.shift();
    if (!first) {
      this.errors.add('receipt-without-publish');
      return;
    }
    if (list!.length === 0) this.waiting.delete(token);
    if (first.counted) this.latency.add(at - first.at);
  }

  async collect(allowedUnmatched: number): Promise<DeliveryReport> {
    // Receipts travel over the mock's stdout: give the last ones a moment after the replies.
    const started = performance.now();
    while (this.waiting.size > 0 && performance.now() - started < 5000 && performance.now() - this.lastReceiptAt < 1000) {
      await new Promise((r) => setTimeout(r, 50));
    }
    let unmatched = 0;
    for (const list of this.waiting.values()) unmatched += list.length;
    if (unmatched > allowedUnmatched) this.errors.add('publish-without-receipt', unmatched - allowedUnmatched);
    return { latency: this.latency, errors: this.errors, unmatched };
  }
}

interface MockReady {
  origin: string;
  caFile: string;
  keyFile: string;
  keyId: string;
  teamId: string;
}

async function startApnsMock(mockProcess: MockProcessOptions | undefined): Promise<ProviderSetup> {
  const matcher = new ReceiptMatcher();
  let ready: (value: MockReady) => void = () => {};
  const announced = new Promise<MockReady>((resolve) => { ready = resolve; });
  const mock = new Child('mock-apns', process.execPath, ['--disable-warning=ExperimentalWarning', ...(mockProcess?.nodeArgs ?? []), join(ROOT, 'test/support/mock-apns-main.ts'), '--receipts'], {
    cwd: ROOT,
    env: { ...process.env, ...mockProcess?.env },
    onStdoutLine: (line) => {
      // Hot path: one line per request, {"r":"<token>","t":<ms>}.
      if (line.startsWith('{"r":"')) {
        const end = line.indexOf('"', 6);
        matcher.receipt(line.slice(6, end), Number(line.slice(line.indexOf('"t":', end) + 4, -1)));
      } else if (line.startsWith('{')) {
        ready(JSON.parse(line) as MockReady);
      }
    },
  });
  const info = await Promise.race([
    announced,
    mock.waitExit().then((code) => { throw new Error(`the APNS mock exited (code ${code}):\n${mock.stderrTail()}`); }),
    new Promise<never>((_, reject) => setTimeout(() => reject(new Error(`the APNS mock did not start within 30 s:\n${mock.stderrTail()}`)), 30_000).unref()),
  ]);
  const topic = 'org.example.bench';
  return {
    appTable: [
      'provider = "apns"',
      `topic = ${JSON.stringify(topic)}`,
      `endpoint = ${JSON.stringify(info.origin)}`,
      `ca_file = ${JSON.stringify(info.caFile)}`,
      `key_file = ${JSON.stringify(info.keyFile)}`,
      `key_id = ${JSON.stringify(info.keyId)}`,
      `team_id = ${JSON.stringify(info.teamId)}`,
      '',
    ].join('\n'),
    delivery: matcher,
    apns: { origin: info.origin, caFile: info.caFile, keyFile: info.keyFile, keyId: info.keyId, teamId: info.teamId, topic },
    pid: mock.pid,
    stop: async () => { await mock.stop(); },
  };
}

/** Extra environment and node flags for the mock's process (the --stall-report preload). */
export interface MockProcessOptions {
  env: NodeJS.ProcessEnv;
  nodeArgs: string[];
}

export async function startProviderSetup(kind: 'apns' | 'log', mockProcess?: MockProcessOptions): Promise<ProviderSetup> {
  if (kind === 'apns') return startApnsMock(mockProcess);
  return {
    appTable: 'provider = "log"\n# one log line per push would measure the terminal, not the server\nverbose = false\n',
    delivery: undefined,
    pid: undefined,
    stop: async () => {},
  };
}
