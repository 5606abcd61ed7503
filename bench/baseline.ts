/**
 * `--baseline`: the same push phase, with the same registrations, against the bench's bare forwarder
 * (baseline-forwarder.ts) and the same APNS mock, right after push-appserver's run. Its throughput and
 * CPU per push are the yardstick for ours: absolute figures vary by machine, the ratio much less.
 */
import { randomBytes } from 'node:crypto';
import { mkdirSync, writeFileSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { ForwarderConfig } from './baseline-forwarder.ts';
import { pushPhaseUnderCallgrind, underCallgrind, type InstructionCount } from './callgrind.ts';
import { Child } from './children.ts';
import { GroupWatcher } from './proc-stats.ts';
import type { ProviderSetup } from './providers.ts';
import { monotonicMs, runPushPhase, type PushPhaseOptions, type PushPhaseResult, type PushTargets } from './push-load.ts';
import { round1, round3, type Percentiles } from './stats.ts';
import type { ComponentRoute } from './component-route.ts';
import { XmppPeer, type PublishRoute } from './xmpp-peer.ts';

const HERE = dirname(fileURLToPath(import.meta.url));

export interface BaselineOptions {
  provider: ProviderSetup;
  targets: PushTargets;
  componentJid: string;
  pushes: number;
  warmup: number;
  concurrency: number;
  rate: number | undefined;
  timeoutMs: number;
  dir: string;
  env: NodeJS.ProcessEnv;
  /** `--profile DIR`: the forwarder's CPU profile goes to DIR/baseline, with its own push-phase.json. */
  profileDir?: string;
  /** As many forwarders as push-appserver instances, on one component JID (CPU summed). */
  instances?: number;
  /** The same read moderation as push-appserver's xmpp.read_coalesce_ms, so the two are compared alike. */
  readCoalesceMs: number;
  /** `--callgrind DIR`: the forwarder runs under callgrind too, its dumps in this directory. */
  callgrindDir?: string;
  /**
   * `--via prosody`: the forwarder attaches to that XMPP server as push-appserver did (same JID, port
   * and secret) and the publishes take the same route; the route stays open for the caller.
   */
  via?: { route: ComponentRoute; port: number; secret: string };
}

export interface BaselineResult {
  pushesPerS: number;
  cpuMsPerPush: number | null;
  cpuSPush: number;
  result: Percentiles;
  delivery: Percentiles | null;
  errors: Map<string, number>;
  rssPeakMb: number;
  timed: number;
  instructions?: InstructionCount;
}

/** The V8 flags bin/push-appserver gives the server, so both sides collect garbage alike. */
function serverLikeNodeFlags(env: NodeJS.ProcessEnv): string[] {
  const nodeOptions = env.NODE_OPTIONS ?? '';
  const flags: string[] = [];
  if (!/--max-semi-space-size|--max-old-space-size/.test(nodeOptions)) flags.push('--max-semi-space-size=8', '--max-old-space-size=1024');
  if (!/--v8-pool-size/.test(nodeOptions) && availableParallelism() <= 2) flags.push('--v8-pool-size=1');
  return flags;
}

/** Server CPU ms per counted push, from /proc samples at the first counted publish and after the last answer. */
export function cpuMsPerPush(cpuAtStart: number | undefined, cpuAtEnd: number | undefined, pushes: number): number | null {
  if (cpuAtStart === undefined || cpuAtEnd === undefined || pushes === 0) return null;
  return round3(((cpuAtEnd - cpuAtStart) * 1000) / pushes);
}

function within<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => { timer = setTimeout(() => reject(new Error(`${what} within ${ms} ms`)), ms); });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

export async function runBaseline(options: BaselineOptions): Promise<BaselineResult> {
  const apns = options.provider.apns;
  if (!apns) throw new Error('--baseline needs --provider apns');
  const instances = options.instances ?? 1;
  const via = options.via;
  const secret = via?.secret ?? randomBytes(12).toString('hex');
  const direct = via ? undefined : new XmppPeer({ componentJid: options.componentJid, secret, connections: instances });
  const peer: PublishRoute = via?.route ?? direct!;
  const xmppPort = via?.port ?? await direct!.listen();
  const targetsFile = join(options.dir, 'baseline-targets.tsv');
  let tsv = '';
  for (let i = 0; i < options.targets.count; i++) {
    const { node, token } = options.targets.get(i);
    tsv += `${node}\t${token}\n`;
  }
  writeFileSync(targetsFile, tsv);
  const config: ForwarderConfig = { componentJid: options.componentJid, xmppPort, secret, ...apns, targetsFile, readCoalesceMs: options.readCoalesceMs };
  const configFile = join(options.dir, 'baseline.json');
  writeFileSync(configFile, JSON.stringify(config));

  const profileDir = options.profileDir === undefined ? undefined : join(options.profileDir, 'baseline');
  const forwarders: Child[] = [];
  // Each forwarder prints `ready` once its component is online (through an XMPP server, all must be).
  const readyLines: Array<Promise<void>> = [];
  for (let i = 0; i < instances; i++) {
    let ready!: () => void;
    readyLines.push(new Promise<void>((resolve) => { ready = resolve; }));
    const forwarder = { command: process.execPath, args: [
      ...serverLikeNodeFlags(options.env), ...(profileDir ? ['--cpu-prof', `--cpu-prof-dir=${profileDir}`] : []), '--disable-warning=ExperimentalWarning', resolve(HERE, 'baseline-forwarder.ts'), '--config', configFile,
    ] };
    const { command, args } = options.callgrindDir ? underCallgrind(options.callgrindDir, forwarder.command, forwarder.args) : forwarder;
    forwarders.push(new Child('baseline', command, args, { cwd: options.dir, env: options.env, onStdoutLine: (line) => { if (line === 'ready') ready(); } }));
  }
  let watcher: GroupWatcher | undefined;
  const onlineTimeoutMs = options.callgrindDir ? 600_000 : 30_000;
  try {
    await Promise.race([
      via
        ? within(Promise.all(readyLines), onlineTimeoutMs, 'the forwarders did not attach to the XMPP server').then(() => via.route.waitTargetOnline(onlineTimeoutMs))
        : direct!.waitOnline(onlineTimeoutMs),
      ...forwarders.map((forwarder) => forwarder.waitExit().then((code) => { throw new Error(`the baseline forwarder exited (code ${code}):\n${forwarder.stderrTail()}`); })),
    ]);
    await new Promise((r) => setTimeout(r, 500));
    watcher = new GroupWatcher(forwarders.map((f) => f.pid), 100);
    const delivery = options.provider.delivery;
    delivery?.reset?.();
    let cpuAtCountStart: number | undefined;
    let countingStartedAtMs = 0;
    const cpuAtStart = watcher.sample()?.cpuS ?? 0;
    const phase: PushPhaseOptions = {
      peer,
      targets: options.targets,
      pushes: options.pushes,
      warmup: options.warmup,
      concurrency: options.concurrency,
      rate: options.rate,
      deadline: Date.now() + options.timeoutMs,
      onSent: delivery ? (index, token, at) => delivery.sent(index >= options.warmup, token, at) : undefined,
      onCountingStarts: () => {
        cpuAtCountStart = watcher!.sample()?.cpuS;
        countingStartedAtMs = monotonicMs();
      },
    };
    let push: PushPhaseResult;
    let instructions: InstructionCount | undefined;
    if (options.callgrindDir) ({ push, instructions } = await pushPhaseUnderCallgrind(forwarders[0].pid, options.callgrindDir, phase));
    else push = await runPushPhase(phase);
    const after = watcher.sample();
    if (profileDir) {
      mkdirSync(profileDir, { recursive: true });
      writeFileSync(join(profileDir, 'push-phase.json'), JSON.stringify({ startUs: Math.round(countingStartedAtMs * 1000), endUs: Math.round(monotonicMs() * 1000), pushes: push.timedCompleted }));
    }
    const deliveryReport = delivery ? await delivery.collect(push.sharedNode) : null;
    watcher.stop();
    const errors = new Map<string, number>();
    for (const [type, n] of push.errors.byType) errors.set(`push:${type}`, n);
    if (deliveryReport) for (const [type, n] of deliveryReport.errors.byType) errors.set(`delivery:${type}`, n);
    if (peer.handshakeFailures > 0) errors.set('xmpp:handshake-failed', peer.handshakeFailures);
    return {
      pushesPerS: Math.round(push.perSecond),
      cpuMsPerPush: cpuMsPerPush(cpuAtCountStart, after?.cpuS, push.timedCompleted),
      cpuSPush: round3((after?.cpuS ?? cpuAtStart) - cpuAtStart),
      result: push.latency.percentiles(),
      delivery: deliveryReport?.latency.percentiles() ?? null,
      errors,
      rssPeakMb: round1(Math.max(watcher.maxRssMb, after?.peakRssMb ?? 0)),
      timed: push.timedCompleted,
      ...(instructions ? { instructions } : {}),
    };
  } finally {
    watcher?.stop();
    await Promise.all(forwarders.map((f) => f.stop(2000)));
    await direct?.close().catch(() => {});
  }
}
