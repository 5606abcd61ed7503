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
  sent(counted: boolean, token: string, monotonicMs: number, index?: number): void;
  /** Its answer arrived: `accepted` (iq result or a `wait` error) publishes must be delivered. */
  answered?(index: number, accepted: boolean): void;
  /** Waits for the last receipts, then matches what is left. */
  collect(allowedUnmatched: number): Promise<DeliveryReport>;
  /** Forgets every publish and receipt so far, for a second push phase against the same mock (--baseline). */
  reset?(): void;
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
  /** Set by collect(): the report is made; later receipts are not ours (until reset(): a --baseline run). */
  private collected = false;

  reset(): void {
    this.waiting = new Map();
    this.latency = new Samples();
    this.errors = new ErrorTally();
    this.lastReceiptAt = 0;
    this.collected = false;
  }

  sent(counted: boolean, token: string, at: number): void {
    const list = this.waiting.get(token);
    if (list) list.push({ at, counted });
    else this.waiting.set(token, [{ at, counted }]);
  }

  receipt(token: string, at: number): void {
    if (this.collected) return;
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
    this.collected = true;
    let unmatched = 0;
    for (const list of this.waiting.values()) unmatched += list.length;
    if (unmatched > allowedUnmatched) this.errors.add('publish-without-receipt', unmatched - allowedUnmatched);
    return { latency: this.latency, errors: this.errors, unmatched };
  }
}

/** Fault mode (--fault-rate, --outage-s): what was accepted, what was delivered, what was lost. */
export interface DeliveryLedgerReport extends DeliveryReport {
  accepted: number;
  delivered: number;
  lost: number;
}

/**
 * Fault mode: the mock sends a receipt only for requests it answered 200. A publish the server
 * accepted (result or wait) is delivered when a 200 for its device token arrives after it was sent:
 * one push covers every publish before it (the server merges them). What is left after the server
 * had time to retry is lost.
 */
export class DeliveryLedger implements DeliveryTracker {
  private readonly waiting = new Map<string, Array<{ at: number; counted: boolean; index: number }>>();
  private readonly byIndex = new Map<number, string>();
  private readonly rejected = new Set<number>();
  private readonly latency = new Samples();
  private readonly errors = new ErrorTally();
  private accepted = 0;
  private delivered = 0;
  private readonly settleMs: number;

  constructor(settleMs: number) {
    this.settleMs = settleMs;
  }

  sent(counted: boolean, token: string, at: number, index = -1): void {
    const list = this.waiting.get(token);
    const entry = { at, counted, index };
    if (list) list.push(entry);
    else this.waiting.set(token, [entry]);
    this.byIndex.set(index, token);
  }

  answered(index: number, accepted: boolean): void {
    if (accepted) {
      this.accepted += 1;
      return;
    }
    // Refused (e.g. not-found): nothing is owed; drop it from the waiting list.
    const token = this.byIndex.get(index);
    this.byIndex.delete(index);
    if (token === undefined) return;
    this.rejected.add(index);
    const list = this.waiting.get(token);
    if (!list) return;
    const at = list.findIndex((entry) => entry.index === index);
    if (at !== -1) list.splice(at, 1);
    if (list.length === 0) this.waiting.delete(token);
  }

  receipt(token: string, at: number): void {
    const list = this.waiting.get(token);
    if (!list) return;
    let covered = 0;
    while (covered < list.length && list[covered].at <= at) covered += 1;
    for (const entry of list.splice(0, covered)) {
      this.byIndex.delete(entry.index);
      this.delivered += 1;
      if (entry.counted) this.latency.add(at - entry.at);
    }
    if (list.length === 0) this.waiting.delete(token);
  }

  /** Waits (up to settleMs) until every accepted publish was delivered. */
  async collect(): Promise<DeliveryLedgerReport> {
    const started = performance.now();
    while (this.waiting.size > 0 && performance.now() - started < this.settleMs) await new Promise((r) => setTimeout(r, 100));
    let lost = 0;
    for (const list of this.waiting.values()) lost += list.length;
    if (lost > 0) this.errors.add('accepted-but-not-delivered', lost);
    return { latency: this.latency, errors: this.errors, unmatched: lost, accepted: this.accepted, delivered: this.delivered, lost };
  }
}

export interface FaultOptions {
  /** Fraction of provider answers that are 503. */
  faultRate: number;
  /** A full outage of this many seconds, starting at request `outageAfterRequests`. */
  outageS: number;
  outageAfterRequests: number;
  /** How long to wait after the last answer for the retries to deliver. */
  settleMs: number;
}

interface MockReady {
  origin: string;
  caFile: string;
  keyFile: string;
  keyId: string;
  teamId: string;
}

async function startApnsMock(mockProcess: MockProcessOptions | undefined, faults: FaultOptions | undefined): Promise<ProviderSetup> {
  const matcher = faults ? new DeliveryLedger(faults.settleMs) : new ReceiptMatcher();
  const faultArgs = faults ? [
    '--delivery-receipts',
    ...(faults.faultRate > 0 ? ['--fault-rate', String(faults.faultRate)] : []),
    ...(faults.outageS > 0 ? ['--outage-s', String(faults.outageS), '--outage-after-requests', String(faults.outageAfterRequests)] : []),
  ] : [];
  let ready: (value: MockReady) => void = () => {};
  const announced = new Promise<MockReady>((resolve) => { ready = resolve; });
  const mock = new Child('mock-apns', process.execPath, ['--disable-warning=ExperimentalWarning', ...(mockProcess?.nodeArgs ?? []), join(ROOT, 'test/support/mock-apns-main.ts'), '--receipts', ...faultArgs], {
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

export async function startProviderSetup(kind: 'apns' | 'log', mockProcess?: MockProcessOptions, faults?: FaultOptions): Promise<ProviderSetup> {
  if (kind === 'apns') return startApnsMock(mockProcess, faults);
  if (faults) throw new Error('--fault-rate and --outage-s need --provider apns');
  return {
    appTable: 'provider = "log"\n# one log line per push would measure the terminal, not the server\nverbose = false\n',
    delivery: undefined,
    pid: undefined,
    stop: async () => {},
  };
}
