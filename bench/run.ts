/**
 * `npm run bench`: the project's one source of performance figures (issue 6).
 *
 * Three processes on loopback: this load generator (the XMPP server's side of XEP-0114 and an HTTP
 * client), push-appserver started as a user starts it (`bin/push-appserver serve --config FILE` with a
 * generated config), and, for `--provider apns`, the APNS mock (HTTP/2 over TLS) in its own process.
 * Phases: register N devices over HTTP, then M XEP-0357 publishes to random registered nodes,
 * closed loop with C in flight or at a fixed offered rate; a warm-up of each phase is not counted.
 * Prints a table, and with --json one JSON object on the last line of stdout.
 */
import { execFileSync } from 'node:child_process';
import { randomBytes, createHash } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { availableParallelism, cpus, tmpdir, totalmem } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { cpuMsPerPush, runBaseline, type BaselineResult } from './baseline.ts';
import { callgrindAvailable, IDLE_S, instructionFigures, pushPhaseUnderCallgrind, underCallgrind, type InstructionCount } from './callgrind.ts';
import { Child } from './children.ts';
import { startProviderSetup, type DeliveryLedgerReport, type ProviderSetup } from './providers.ts';
import { GroupWatcher, processTreeCpuS, sampleProcess } from './proc-stats.ts';
import { monotonicMs, runPushPhase, type PushPhaseOptions, type PushPhaseResult, type PushTargets } from './push-load.ts';
import { runRegisterPhase } from './register-load.ts';
import { formatStallReport, prepareStallDir, stallMonitorForChild, startStallMonitor, stallReport, type StallReport } from './stall-monitor.ts';
import { seededNode, seededSecret, seededToken, seedRegistrations } from './seed.ts';
import { round1, round3, type Percentiles } from './stats.ts';
import { ComponentRoute } from './component-route.ts';
import { startRouteServer, type RouteServer, type RouteServerKind } from './route-servers.ts';
import { XmppPeer, type PublishRoute } from './xmpp-peer.ts';
import { DEFAULT_READ_COALESCE_MS } from '../src/config/schema.ts';
import { freePort } from '../test/support/ports.ts';
import { startPostgres, type PostgresInstance } from '../test/support/postgres.ts';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const SCALE_REGISTRATIONS = 1_000_000;
const COMPONENT_JID = 'push.localhost';
/** `--via`: the load generator's own component JID on that XMPP server. */
const LOAD_JID = 'load.localhost';
const APP = 'bench';

const USAGE = `npm run bench -- [options]

  --devices N        devices registered over HTTP first (default 10000)
  --pushes M         publishes counted (default 100000), after a warm-up (--warmup, default M/10, at most 5000)
  --concurrency C    closed loop: publishes (and registrations) in flight (default 100)
  --rate R           open loop instead: offer R publishes per second
  --provider P       apns (the APNS mock over HTTP/2+TLS, default) or log (dry run; no delivery latency)
  --store S          sqlite (a temp file, default), memory, postgres (a PostgreSQL the bench starts
                     in a temp dir, as the tests do), or a storage url (sqlite:PATH, postgres://…)
  --instances N      N push-appserver processes on one PostgreSQL (needs --store postgres), all
                     connected as the same component JID: the load generator plays an ejabberd that
                     spreads the publishes round-robin over the N connections (default 1)
  --scale            seed ${SCALE_REGISTRATIONS.toLocaleString('en')} registrations into the SQLite file first
  --metrics on|off   push-appserver's Prometheus metrics (metrics.enabled; default on, as operators run it)
  --via S            prosody or ejabberd: the publishes go through that real XMPP server (Debian's,
                     started in a temp dir as the tests do): the load generator is a component of
                     it, push-appserver another, and the server routes every publish and answer;
                     its CPU is reported as well. ejabberd takes --instances N on one JID and
                     spreads the publishes itself. Default: direct (the load generator plays the
                     user's server on push-appserver's socket)
  --read-coalesce-ms N  xmpp.read_coalesce_ms for push-appserver and the --baseline forwarder alike
                     (default: the server's default, 2; 0 reads every arrival at once)
  --json             print one JSON object on the last line of stdout
  --timeout S        bound for each phase in seconds (default 300)
  --fault-rate F     the APNS mock answers this fraction (0…1) of requests 503; the JSON gains
                     accepted, delivered, lost (lost must be 0: every accepted push is delivered)
  --outage-s N       the APNS mock answers everything 503 for N seconds in the middle of the push phase
  --profile DIR      write push-appserver's V8 CPU profile (node --cpu-prof) into DIR; then
                     node bench/profile-summary.ts DIR --per-push  says where the counted publishes' CPU went
  --server-node-options "…"   extra NODE_OPTIONS for push-appserver (experiments, e.g. GC flags)
  --server-log       print the last lines of push-appserver's log after the table
  --keep             keep the temp dir (config, SQLite file)
  --latency-csv FILE write every publish's send time and latency (ms) as CSV, to look at the tail
  --baseline         then run the same push phase against the bench's bare forwarder
                     (bench/baseline-forwarder.ts: ltx parse, one HTTP/2 request, iq result; no store,
                     no checks) on the same APNS mock, and report ratio_to_baseline (ours / baseline)
  --callgrind DIR    run push-appserver (and with --baseline the forwarder, dumps in DIR/baseline)
                     under valgrind's callgrind (dumps in DIR) and report the instructions executed
                     per counted push, and per second while idle: figures the machine's speed and
                     idle penalty do not move (bench/callgrind.ts). About 50× slower: use small
                     loads (e.g. --devices 500 --warmup 3000 --pushes 2000, or --rate 10)
  --stall-report DIR record every process's GC pauses and event-loop stalls into DIR and report
                     which of them the publishes at or above the p99 overlapped (perturbs the run: a 1 ms
                     timer in every process, and the preload adds memory to push-appserver)
`;

interface Options {
  devices: number;
  pushes: number;
  warmup: number;
  concurrency: number;
  rate: number | undefined;
  provider: 'apns' | 'log';
  store: string;
  scale: boolean;
  seeded: number;
  json: boolean;
  timeoutS: number;
  profileDir: string | undefined;
  serverNodeOptions: string | undefined;
  keep: boolean;
  serverLog: boolean;
  latencyCsv: string | undefined;
  stallDir: string | undefined;
  baseline: boolean;
  instances: number;
  faultRate: number;
  outageS: number;
  metrics: boolean;
  /** xmpp.read_coalesce_ms for push-appserver and the forwarder alike; undefined = the server's default. */
  readCoalesceMs: number | undefined;
  callgrindDir: string | undefined;
  via: 'direct' | RouteServerKind;
}

function positiveInt(name: string, value: string | undefined, fallback: number, min = 1): number {
  if (value === undefined) return fallback;
  const n = Number(value);
  if (!Number.isInteger(n) || n < min) throw new Error(`--${name} must be an integer ≥ ${min}, got "${value}"`);
  return n;
}

function parseOptions(argv: string[]): Options {
  const { values } = parseArgs({
    args: argv,
    options: {
      devices: { type: 'string' },
      pushes: { type: 'string' },
      warmup: { type: 'string' },
      concurrency: { type: 'string' },
      rate: { type: 'string' },
      provider: { type: 'string' },
      store: { type: 'string' },
      scale: { type: 'boolean' },
      'scale-registrations': { type: 'string' },
      json: { type: 'boolean' },
      timeout: { type: 'string' },
      profile: { type: 'string' },
      'server-node-options': { type: 'string' },
      keep: { type: 'boolean' },
      'server-log': { type: 'boolean' },
      'latency-csv': { type: 'string' },
      'stall-report': { type: 'string' },
      baseline: { type: 'boolean' },
      instances: { type: 'string' },
      'fault-rate': { type: 'string' },
      'outage-s': { type: 'string' },
      metrics: { type: 'string' },
      'read-coalesce-ms': { type: 'string' },
      callgrind: { type: 'string' },
      via: { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  if (values.help) {
    process.stdout.write(USAGE);
    process.exit(0);
  }
  const pushes = positiveInt('pushes', values.pushes, 100_000);
  const provider = values.provider ?? 'apns';
  if (provider !== 'apns' && provider !== 'log') throw new Error(`--provider must be apns or log, got "${provider}"`);
  const scale = values.scale === true || values['scale-registrations'] !== undefined;
  const baseline = values.baseline === true;
  if (baseline && provider !== 'apns') throw new Error('--baseline needs --provider apns (the forwarder talks to the APNS mock)');
  if (baseline && scale) throw new Error('--baseline with --scale is not supported (the forwarder keeps its targets in memory)');
  const instances = positiveInt('instances', values.instances, 1);
  const store = values.store ?? 'sqlite';
  if (instances > 1 && store !== 'postgres' && !/^postgres(ql)?:\/\//.test(store)) throw new Error('--instances above 1 needs a shared store: --store postgres');
  if (instances > 1 && values['stall-report'] !== undefined) throw new Error('--stall-report watches one push-appserver: not with --instances');
  const faultRate = values['fault-rate'] === undefined ? 0 : Number(values['fault-rate']);
  if (!(faultRate >= 0 && faultRate < 1)) throw new Error(`--fault-rate must be a fraction from 0 up to (not including) 1, got "${values['fault-rate']}"`);
  if (baseline && (faultRate > 0 || values['outage-s'] !== undefined)) throw new Error('--baseline measures the healthy path: not with --fault-rate or --outage-s');
  const metrics = values.metrics ?? 'on';
  if (values.callgrind !== undefined) {
    const clash = [['--instances', instances > 1], ['--profile', values.profile !== undefined],
      ['--stall-report', values['stall-report'] !== undefined], ['--fault-rate/--outage-s', faultRate > 0 || values['outage-s'] !== undefined]] as const;
    for (const [flag, set] of clash) if (set) throw new Error(`--callgrind counts one push-appserver on the healthy path: not with ${flag}`);
    if (!callgrindAvailable()) throw new Error('--callgrind needs valgrind and callgrind_control (Debian package valgrind)');
  }
  const via = values.via ?? 'direct';
  if (via !== 'direct' && via !== 'prosody' && via !== 'ejabberd') throw new Error(`--via must be direct, prosody or ejabberd, got "${via}"`);
  if (via === 'prosody' && instances > 1) throw new Error('--via prosody takes one push-appserver: Prosody accepts one connection per component JID');
  if (metrics !== 'on' && metrics !== 'off') throw new Error(`--metrics must be on or off, got "${metrics}"`);
  return {
    devices: positiveInt('devices', values.devices, 10_000),
    pushes,
    warmup: positiveInt('warmup', values.warmup, Math.min(5000, Math.floor(pushes / 10)), 0),
    concurrency: positiveInt('concurrency', values.concurrency, 100),
    rate: values.rate === undefined ? undefined : positiveInt('rate', values.rate, 0),
    provider,
    store,
    scale,
    seeded: scale ? positiveInt('scale-registrations', values['scale-registrations'], SCALE_REGISTRATIONS) : 0,
    json: values.json === true,
    timeoutS: positiveInt('timeout', values.timeout, 300),
    profileDir: values.profile === undefined ? undefined : resolve(values.profile),
    serverNodeOptions: values['server-node-options'],
    keep: values.keep === true,
    serverLog: values['server-log'] === true,
    latencyCsv: values['latency-csv'],
    stallDir: values['stall-report'] === undefined ? undefined : resolve(values['stall-report']),
    baseline,
    instances,
    faultRate,
    outageS: positiveInt('outage-s', values['outage-s'], 0, 0),
    metrics: metrics === 'on',
    readCoalesceMs: values['read-coalesce-ms'] === undefined ? undefined : positiveInt('read-coalesce-ms', values['read-coalesce-ms'], 0, 0),
    callgrindDir: values.callgrind === undefined ? undefined : resolve(values.callgrind),
    via,
  };
}

function storageUrl(store: string, dir: string): string {
  if (store === 'sqlite') return `sqlite:${join(dir, 'push.db')}`;
  if (store === 'memory') return 'sqlite::memory:';
  if (/^(sqlite:|postgres:\/\/|postgresql:\/\/)/.test(store)) return store;
  throw new Error(`--store must be sqlite, memory or a storage url, got "${store}"`);
}

/** With faults, retries are what is measured: a short backoff cap, so the run ends soon after the provider recovers. */
const FAULT_RETRY_MAX_BACKOFF_S = 2;

function configToml(options: { xmppPort: number; httpPort: number; secret: string; storage: string; appTable: string; metrics: boolean; faults: boolean; readCoalesceMs: number | undefined }): string {
  return `# generated by npm run bench
[xmpp]
component_jid = "${COMPONENT_JID}"
server_host = "127.0.0.1"
server_port = ${options.xmppPort}
component_secret = "${options.secret}"
${options.readCoalesceMs === undefined ? '' : `read_coalesce_ms = ${options.readCoalesceMs}\n`}
[http]
host = "127.0.0.1"
port = ${options.httpPort}

[storage]
url = ${JSON.stringify(options.storage)}

[log]
level = "info"

[metrics]
enabled = ${options.metrics}

# The load comes from one domain and one address: the abuse limits would measure themselves.
[push]
max_publishes_per_domain_per_s = 0
${options.faults ? `retry_max_backoff_s = ${FAULT_RETRY_MAX_BACKOFF_S}\n` : ''}
[registration]
http_per_ip_per_minute = 0

[apps.${APP}]
${options.appTable}
`;
}

/** The postmaster's pid (first line of postmaster.pid in the data directory). */
function postmasterPid(database: PostgresInstance): number | undefined {
  try {
    return Number(readFileSync(join(database.dir, 'data', 'postmaster.pid'), 'utf8').split('\n')[0]) || undefined;
  } catch {
    return undefined;
  }
}

/** Until `endpoint` (`health`, or `ready`: also the component attached and the store answering) answers 200. */
async function waitForHealth(baseUrl: string, server: Child, timeoutMs: number, endpoint: 'health' | 'ready' = 'health'): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let last = 'no answer';
  while (Date.now() < deadline) {
    if (!server.running) throw new Error(`push-appserver exited (code ${server.exitCode}):\n${server.stderrTail()}`);
    try {
      const response = await fetch(new URL(`/push_appserver/v1/${endpoint}`, baseUrl));
      if (response.ok) return;
      last = await response.text();
    } catch {
      // not listening yet
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`push-appserver's /${endpoint} did not answer 200 within ${timeoutMs} ms (${last}):\n${server.stderrTail()}`);
}

/** The publishes an instance counted, from its /metrics (push_appserver_publishes_total, every label). */
async function publishesCounted(baseUrl: string): Promise<number> {
  const text = await (await fetch(new URL('/metrics', baseUrl))).text();
  let total = 0;
  for (const line of text.split('\n')) if (line.startsWith('push_appserver_publishes_total{')) total += Number(line.slice(line.lastIndexOf(' ') + 1));
  return total;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function machine() {
  return {
    nproc: availableParallelism(),
    cpu: cpus()[0]?.model ?? 'unknown',
    memory_gb: round1(totalmem() / 2 ** 30),
    node: process.version,
  };
}

function formatLatency(p: Percentiles | null): string {
  if (!p || p.count === 0) return 'not measured';
  return `p50 ${p.p50} · p90 ${p.p90} · p99 ${p.p99} · max ${p.max} ms  (n=${p.count})`;
}

async function main(): Promise<number> {
  let options: Options;
  try {
    options = parseOptions(process.argv.slice(2));
  } catch (error) {
    process.stderr.write(`bench: ${(error as Error).message}\n\n${USAGE}`);
    return 2;
  }
  const progress = (line: string) => process.stderr.write(`bench: ${line}\n`);
  const dir = mkdtempSync(join(tmpdir(), 'push-appserver-bench-'));
  // Also on Ctrl-C (children.ts exits the process from its signal handler, skipping `finally`).
  const removeDir = () => { if (!options.keep) rmSync(dir, { recursive: true, force: true }); };
  process.once('exit', removeDir);
  const runId = randomBytes(4).toString('hex');
  const notes: string[] = [];
  const servers: Child[] = [];
  let provider: ProviderSetup | undefined;
  let peer: PublishRoute | undefined;
  let watcher: GroupWatcher | undefined;
  let database: PostgresInstance | undefined;
  let routeServer: RouteServer | undefined;
  try {
    let storage: string;
    if (options.store === 'postgres') {
      progress('starting PostgreSQL in a temp dir (initdb, a free loopback port)…');
      database = await startPostgres();
      storage = database.url(await database.createDatabase('bench'));
    } else {
      storage = storageUrl(options.store, dir);
    }
    let seedSeconds: number | null = null;
    if (options.seeded > 0) {
      if (!storage.startsWith('sqlite:') || storage === 'sqlite::memory:') throw new Error('--scale needs a SQLite file store');
      progress(`seeding ${options.seeded.toLocaleString('en')} registrations into the SQLite file (bulk insert, one transaction)…`);
      seedSeconds = await seedRegistrations(storage.replace(/^sqlite:(\/\/)?/, ''), APP, runId, options.seeded);
      notes.push(`${options.seeded} registrations seeded straight into SQLite (same schema, one transaction, ${round1(seedSeconds)} s) before the server started; the HTTP registrations come on top`);
    }

    if (options.stallDir) prepareStallDir(options.stallDir);
    const faulty = options.faultRate > 0 || options.outageS > 0;
    const faults = faulty ? {
      faultRate: options.faultRate,
      outageS: options.outageS,
      // The outage starts in the middle of the push phase (registrations make no provider requests).
      outageAfterRequests: options.warmup + Math.floor(options.pushes / 2),
      settleMs: (options.outageS + 4 * FAULT_RETRY_MAX_BACKOFF_S + 20) * 1000,
    } : undefined;
    provider = await startProviderSetup(options.provider, options.stallDir ? stallMonitorForChild(options.stallDir, 'mock') : undefined, faults);
    const secret = randomBytes(12).toString('hex');
    const instanceConfigs: Array<{ file: string; httpPort: number }> = [];
    let xmppPort: number;
    let waitComponentsOnline: (timeoutMs: number) => Promise<void>;
    let route: ComponentRoute | undefined;
    if (options.via !== 'direct') {
      progress(`starting ${options.via} in a temp dir (the route of every publish)…`);
      const routeSecret = randomBytes(12).toString('hex');
      routeServer = await startRouteServer(options.via, { componentJid: COMPONENT_JID, componentSecret: secret, routeJid: LOAD_JID, routeSecret });
      xmppPort = routeServer.componentPort;
      // Several senders: ejabberd may pick a component connection by the sender.
      route = await ComponentRoute.connect({ port: routeServer.routePort, jid: LOAD_JID, secret: routeSecret, target: COMPONENT_JID, senders: options.instances > 1 ? 64 : 1 });
      peer = route;
      // An answer through the server; that every instance is attached, their /ready says (below).
      waitComponentsOnline = (timeoutMs) => route!.waitTargetOnline(timeoutMs);
    } else {
      const direct = new XmppPeer({ componentJid: COMPONENT_JID, secret, connections: options.instances });
      xmppPort = await direct.listen();
      peer = direct;
      waitComponentsOnline = (timeoutMs) => direct.waitOnline(timeoutMs);
    }
    const routeServerPid = routeServer?.pid;
    // One config per instance; they differ in the HTTP port only (same component JID, same database).
    for (let i = 0; i < options.instances; i++) {
      const httpPort = await freePort();
      const file = join(dir, options.instances === 1 ? 'push-appserver.toml' : `push-appserver-${i + 1}.toml`);
      writeFileSync(file, configToml({ xmppPort, httpPort, secret, storage, appTable: provider.appTable, metrics: options.metrics, faults: faulty, readCoalesceMs: options.readCoalesceMs }));
      instanceConfigs.push({ file, httpPort });
    }
    const configFile = instanceConfigs[0].file;

    const env = { ...process.env };
    if (options.serverNodeOptions) env.NODE_OPTIONS = `${env.NODE_OPTIONS ?? ''} ${options.serverNodeOptions}`.trim();
    const serveEnv = { ...env };
    if (options.profileDir) serveEnv.NODE_OPTIONS = `${serveEnv.NODE_OPTIONS ?? ''} --cpu-prof --cpu-prof-dir=${options.profileDir}`.trim();
    if (options.stallDir) {
      const monitor = stallMonitorForChild(options.stallDir, 'push-appserver');
      Object.assign(serveEnv, monitor.env);
      serveEnv.NODE_OPTIONS = `${serveEnv.NODE_OPTIONS ?? ''} ${monitor.nodeArgs.join(' ')}`.trim();
    }
    // What an operator runs first; it also fills Node's compile cache (bin/push-appserver), so the
    // server below starts the way every start after the first does.
    try {
      execFileSync(join(ROOT, 'bin/push-appserver'), ['check-config', '--config', configFile], { cwd: dir, env, stdio: ['ignore', 'ignore', 'pipe'] });
    } catch (error) {
      throw new Error(`push-appserver check-config failed:\n${String((error as { stderr?: Buffer }).stderr ?? (error as Error).message)}`);
    }
    progress(`starting ${options.instances === 1 ? 'push-appserver' : `${options.instances} push-appserver instances`} (provider ${options.provider}, storage ${storage.replace(/\/\/([^:@/]+):[^@]*@/, '//$1:…@')})`);
    for (const [i, instance] of instanceConfigs.entries()) {
      const serve = { command: join(ROOT, 'bin/push-appserver'), args: ['serve', '--config', instance.file] };
      const { command, args } = options.callgrindDir ? underCallgrind(options.callgrindDir, serve.command, serve.args) : serve;
      servers.push(new Child(options.instances === 1 ? 'push-appserver' : `push-appserver-${i + 1}`, command, args, { cwd: dir, env: serveEnv, flag: / (WARN|ERROR) / }));
    }
    watcher = new GroupWatcher(servers.map((s) => s.pid), 100);
    const baseUrl = `http://127.0.0.1:${instanceConfigs[0].httpPort}`;
    const timeoutMs = options.timeoutS * 1000;
    const startTimeoutMs = options.callgrindDir ? 600_000 : 30_000;
    await Promise.all([waitComponentsOnline(startTimeoutMs), ...servers.map((s, i) => waitForHealth(`http://127.0.0.1:${instanceConfigs[i].httpPort}`, s, startTimeoutMs, route ? 'ready' : 'health'))]);
    await sleep(1000);
    const idle = watcher.sample();
    const rssIdleMb = idle?.rssMb ?? null;
    const cpuAtStart = idle?.cpuS ?? 0;

    // Phase 1: registrations over HTTP.
    progress(`registering ${options.devices} devices over HTTP, ${options.concurrency} in flight…`);
    const deviceToken = (i: number) => createHash('sha256').update(`${runId}:${i}`).digest('hex');
    const register = await runRegisterPhase({
      baseUrl,
      app: APP,
      devices: options.devices,
      concurrency: options.concurrency,
      warmup: Math.min(500, Math.floor(options.devices / 10)),
      deadline: Date.now() + timeoutMs,
      token: deviceToken,
      deviceId: (i) => `bench-${runId}-${i}`,
    });
    const cpuAfterRegister = watcher.sample()?.cpuS ?? cpuAtStart;
    const rssAfterRegisterMb = watcher.maxRssMb;

    // Phase 2: publishes.
    const registered = register.devices;
    const targets: PushTargets = {
      count: options.seeded + registered.length,
      get: (i) => i < options.seeded
        ? { node: seededNode(runId, i), secret: seededSecret(runId, i), token: seededToken(runId, i) }
        : registered[i - options.seeded],
    };
    if (targets.count === 0) throw new Error('no registration succeeded; nothing to publish to');
    const mode = options.rate === undefined ? `closed loop, ${options.concurrency} in flight` : `offered ${options.rate}/s`;
    progress(`publishing ${options.warmup} warm-up + ${options.pushes} counted pushes to ${targets.count.toLocaleString('en')} registrations, ${mode}…`);
    const delivery = provider.delivery;
    const stopOwnMonitor = options.stallDir ? startStallMonitor('load-generator', options.stallDir) : undefined;
    let cpuAtCountStart: number | undefined;
    let systemCpuAtCountStart: number | undefined;
    let databaseCpuAtCountStart: number | undefined;
    let routeServerCpuAtCountStart: number | undefined;
    const databasePid = database ? postmasterPid(database) : undefined;
    let countingStartedAtMs = 0;
    const phase: PushPhaseOptions = {
      peer,
      targets,
      pushes: options.pushes,
      warmup: options.warmup,
      concurrency: options.concurrency,
      rate: options.rate,
      deadline: Date.now() + timeoutMs,
      onSent: delivery ? (index, token, at) => delivery.sent(index >= options.warmup, token, at, index) : undefined,
      onCountingStarts: () => {
        const atStart = watcher!.sample();
        cpuAtCountStart = atStart?.cpuS;
        systemCpuAtCountStart = atStart?.systemCpuS;
        databaseCpuAtCountStart = databasePid === undefined ? undefined : processTreeCpuS(databasePid);
        routeServerCpuAtCountStart = routeServerPid === undefined ? undefined : processTreeCpuS(routeServerPid);
        countingStartedAtMs = monotonicMs();
      },
      onAnswered: delivery?.answered ? (index, ok, error) => delivery.answered!(index, ok || (error ?? '').startsWith('iq-error:wait/')) : undefined,
      waitIsAccepted: faulty,
    };
    let push: PushPhaseResult;
    let instructions: InstructionCount | undefined;
    if (options.callgrindDir) {
      progress(`callgrind: the warm-up, a pause, ${IDLE_S} s of idle counted, then the counted publishes…`);
      ({ push, instructions } = await pushPhaseUnderCallgrind(servers[0].pid, options.callgrindDir, phase));
    } else {
      push = await runPushPhase(phase);
    }
    if (options.profileDir) {
      // For bench/profile-summary.ts: V8 stamps profile samples on the same clock (µs).
      mkdirSync(options.profileDir, { recursive: true });
      writeFileSync(join(options.profileDir, 'push-phase.json'), JSON.stringify({ startUs: Math.round(countingStartedAtMs * 1000), endUs: Math.round(monotonicMs() * 1000), pushes: push.timedCompleted }));
    }
    if (options.latencyCsv) {
      const { sentAtMs, latencyMs } = push.timeline;
      const epoch = push.timeline.startedAtEpochMs;
      let csv = 'index,sent_ms,sent_epoch_ms,latency_ms\n';
      for (let i = 0; i < sentAtMs.length; i++) {
        csv += `${i},${sentAtMs[i].toFixed(3)},${(epoch + sentAtMs[i]).toFixed(1)},${Number.isNaN(latencyMs[i]) ? '' : latencyMs[i].toFixed(3)}\n`;
      }
      writeFileSync(options.latencyCsv, csv);
    }
    const afterPush = watcher.sample();
    const databaseCpuAfterPush = databasePid === undefined ? undefined : processTreeCpuS(databasePid);
    const routeServerCpuAfterPush = routeServerPid === undefined ? undefined : processTreeCpuS(routeServerPid);
    const publishesByInstance = route && options.metrics ? await Promise.all(instanceConfigs.map((instance) => publishesCounted(`http://127.0.0.1:${instance.httpPort}`))) : undefined;
    const cpuAfterPush = afterPush?.cpuS ?? cpuAfterRegister;
    const rssPeakMb = Math.max(watcher.maxRssMb, afterPush?.peakRssMb ?? 0);
    if (faulty) progress('waiting for the server\'s retries to deliver every accepted push…');
    const deliveryLatency = delivery ? await delivery.collect(push.sharedNode) : null;
    const ledger = deliveryLatency && 'lost' in deliveryLatency ? deliveryLatency as DeliveryLedgerReport : undefined;
    watcher.stop();

    progress('stopping push-appserver…');
    const exitCodes = await Promise.all(servers.map((s) => s.stop(10_000)));
    const providerCpuS = provider.pid ? sampleProcess(provider.pid)?.cpuS ?? null : null;
    let baseline: BaselineResult | undefined;
    if (options.baseline) {
      progress(`baseline: the same ${options.warmup} + ${options.pushes} publishes against the bare forwarder, ${mode}…`);
      baseline = await runBaseline({
        provider,
        targets,
        componentJid: COMPONENT_JID,
        pushes: options.pushes,
        warmup: options.warmup,
        concurrency: options.concurrency,
        rate: options.rate,
        timeoutMs,
        dir,
        env,
        profileDir: options.profileDir,
        instances: options.instances,
        readCoalesceMs: options.readCoalesceMs ?? DEFAULT_READ_COALESCE_MS,
        callgrindDir: options.callgrindDir ? join(options.callgrindDir, 'baseline') : undefined,
        via: route ? { route, port: xmppPort, secret } : undefined,
      });
    }
    await provider.stop();
    await peer.close();
    stopOwnMonitor?.();
    let stalls: StallReport | undefined;
    if (options.stallDir) {
      const { sentAtMs, latencyMs, startedAtEpochMs } = push.timeline;
      stalls = stallReport(options.stallDir, sentAtMs.map((at) => startedAtEpochMs + at), latencyMs, options.warmup);
    }

    // Everything that went wrong, by type.
    const errors = new Map<string, number>();
    const addAll = (tally: Map<string, number>, prefix: string) => {
      for (const [type, n] of tally) errors.set(prefix + type, (errors.get(prefix + type) ?? 0) + n);
    };
    addAll(register.errors.byType, 'register:');
    addAll(push.errors.byType, 'push:');
    if (deliveryLatency) addAll(deliveryLatency.errors.byType, 'delivery:');
    if (peer.handshakeFailures > 0) errors.set('xmpp:handshake-failed', peer.handshakeFailures);
    const serverErrors = servers.flatMap((s) => s.flaggedLines.filter((line) => / ERROR /.test(line)).map((line) => servers.length > 1 ? `${s.name}: ${line}` : line));
    if (serverErrors.length > 0) errors.set('server-log:ERROR', serverErrors.length);
    const failedExits = exitCodes.filter((code) => code !== 0).length;
    if (failedExits > 0) errors.set('server-exit-code', failedExits);
    if (baseline) for (const [type, n] of baseline.errors) errors.set(`baseline:${type}`, n);
    const errorTotal = [...errors.values()].reduce((a, b) => a + b, 0);
    const samples = [...register.errorSamples, ...push.errorSamples].map(([type, text]) => `${type}: ${text}`);

    const resultLatency = push.latency.percentiles();
    const deliveryPercentiles = deliveryLatency?.latency.percentiles() ?? null;
    const strip = (p: Percentiles | null) => ({ p50: p?.p50 ?? null, p90: p?.p90 ?? null, p99: p?.p99 ?? null, max: p?.max ?? null });
    const ourCpuMsPerPush = cpuMsPerPush(cpuAtCountStart, cpuAfterPush, push.timedCompleted);
    const ratio = (ours: number | null, theirs: number | null | undefined) => ours === null || !theirs ? null : Math.round((ours / theirs) * 100) / 100;
    const report = {
      ...(ledger ? { accepted: ledger.accepted, delivered: ledger.delivered, lost: ledger.lost, answered_wait: push.waits } : {}),
      pushes_per_s: Math.round(push.perSecond),
      registrations_per_s: Math.round(register.perSecond),
      errors: errorTotal,
      errors_by_type: Object.fromEntries(errors),
      latency_ms: {
        result: strip(resultLatency),
        delivery: strip(deliveryPercentiles),
        registration: strip(register.latency.percentiles()),
      },
      rss_peak_mb: round1(rssPeakMb),
      rss_idle_mb: rssIdleMb === null ? null : round1(rssIdleMb),
      rss_after_registrations_mb: round1(rssAfterRegisterMb),
      cpu_s: round3(cpuAfterPush - cpuAtStart),
      cpu_s_including_startup: round3(cpuAfterPush),
      cpu_s_by_phase: { register: round3(cpuAfterRegister - cpuAtStart), push: round3(cpuAfterPush - cpuAfterRegister) },
      // push-appserver's CPU (all threads, from /proc; summed over --instances) from the first counted publish to the last answer, per counted push.
      cpu_ms_per_push: ourCpuMsPerPush,
      // Of which in the kernel (stime): system calls and what the kernel does for them.
      cpu_ms_per_push_kernel: cpuMsPerPush(systemCpuAtCountStart, afterPush?.systemCpuS, push.timedCompleted),
      // User-space instructions of push-appserver (all threads) under callgrind; its CPU figures above are valgrind's, not comparable.
      ...(instructions ? instructionFigures(instructions) : {}),
      ...(database ? { database_cpu_ms_per_push: cpuMsPerPush(databaseCpuAtCountStart, databaseCpuAfterPush, push.timedCompleted) } : {}),
      // --via: the XMPP server's CPU (its process tree) for routing each publish and its answer.
      ...(routeServer ? { xmpp_server_cpu_ms_per_push: cpuMsPerPush(routeServerCpuAtCountStart, routeServerCpuAfterPush, push.timedCompleted) } : {}),
      ...(baseline ? {
        baseline: {
          pushes_per_s: baseline.pushesPerS,
          cpu_ms_per_push: baseline.cpuMsPerPush,
          cpu_s_push: baseline.cpuSPush,
          latency_ms: { result: strip(baseline.result), delivery: strip(baseline.delivery) },
          rss_peak_mb: baseline.rssPeakMb,
          pushes_timed: baseline.timed,
          ...(baseline.instructions ? instructionFigures(baseline.instructions) : {}),
        },
        ratio_to_baseline: {
          pushes_per_s: ratio(Math.round(push.perSecond), baseline.pushesPerS),
          cpu_ms_per_push: ratio(ourCpuMsPerPush, baseline.cpuMsPerPush),
          ...(instructions && baseline.instructions ? { instructions_per_push: ratio(instructions.perPush, baseline.instructions.perPush) } : {}),
        },
      } : {}),
      load_generator_cpu_s: round3((process.cpuUsage().user + process.cpuUsage().system) / 1e6),
      provider_cpu_s: providerCpuS === null ? null : round3(providerCpuS),
      parameters: {
        devices: options.devices,
        pushes: options.pushes,
        warmup: options.warmup,
        concurrency: options.rate === undefined ? options.concurrency : null,
        rate: options.rate ?? null,
        provider: options.provider,
        store: options.store,
        scale: options.scale,
        registrations_in_store: targets.count,
        seeded_registrations: options.seeded,
        baseline: options.baseline,
        instances: options.instances,
        via: options.via,
        fault_rate: options.faultRate,
        outage_s: options.outageS,
      },
      counts: {
        registrations_timed: register.timed,
        pushes_sent: push.sent,
        pushes_answered: push.completed,
        pushes_timed: push.timedCompleted,
        publishes_to_a_node_already_in_flight: push.sharedNode,
        deliveries_timed: deliveryPercentiles?.count ?? null,
        publishes_without_receipt: deliveryLatency?.unmatched ?? null,
        // Warm-up included, per component connection (--instances: one per push-appserver process).
        // Through an XMPP server: what each instance counted (push_appserver_publishes_total), warm-up included.
        publishes_by_connection: publishesByInstance ?? [...peer.publishesByConnection],
      },
      ...(stalls ? { stalls } : {}),
      notes,
      machine: machine(),
      date: new Date().toISOString(),
    };

    const table: Array<[string, string]> = [
      ['provider / store', `${options.provider} / ${options.store}${options.seeded > 0 ? ` + ${options.seeded.toLocaleString('en')} seeded` : ''}${routeServer ? ` · publishes via a real ${routeServer.name}` : ''}`],
      ['registrations/s (HTTP)', `${report.registrations_per_s}  (${register.timed} timed, ${options.concurrency} in flight)`],
      ['pushes/s', `${report.pushes_per_s}  (${push.timedCompleted} timed, ${mode})`],
      ['publish → iq result', formatLatency(resultLatency)],
      ['publish → provider receipt', formatLatency(deliveryPercentiles)],
      ...(ledger ? [['accepted / delivered / lost', `${ledger.accepted} / ${ledger.delivered} / ${ledger.lost}  (${push.waits} answered wait; fault rate ${options.faultRate}, outage ${options.outageS} s)`] as [string, string]] : []),
      ['errors', errorTotal === 0 ? '0' : `${errorTotal}  ${JSON.stringify(report.errors_by_type)}`],
      ['push-appserver RSS', `idle ${report.rss_idle_mb} MB · peak ${report.rss_peak_mb} MB`],
      ['push-appserver CPU', `${report.cpu_s} s  (register ${report.cpu_s_by_phase.register} s, push ${report.cpu_s_by_phase.push} s)`],
      ['CPU per push', `${report.cpu_ms_per_push ?? '-'} ms  (push-appserver, counted publishes; in the kernel ${report.cpu_ms_per_push_kernel ?? '-'} ms)`],
      ...(instructions ? [['instructions per push', `${Math.round(instructions.perPush).toLocaleString('en')}  (callgrind, user space, all threads; idle: ${Math.round(instructions.idlePerS).toLocaleString('en')}/s over ${instructions.idleS} s)`] as [string, string]] : []),
      ['load generator / mock CPU', `${report.load_generator_cpu_s} s / ${report.provider_cpu_s ?? '-'} s`],
      ...(routeServer && 'xmpp_server_cpu_ms_per_push' in report ? [[`${routeServer.name} CPU per push`, `${report.xmpp_server_cpu_ms_per_push ?? '-'} ms  (routing each publish and its answer)`] as [string, string]] : []),
      ['machine', `${report.machine.nproc} × ${report.machine.cpu}, ${report.machine.memory_gb} GB, Node ${report.machine.node}`],
    ];
    if (baseline && report.ratio_to_baseline) {
      table.push(
        ['baseline pushes/s', `${baseline.pushesPerS}  (${baseline.timed} timed; bare forwarder, same load and mock)`],
        ['baseline CPU per push', `${baseline.cpuMsPerPush ?? '-'} ms  · publish → iq result ${formatLatency(baseline.result)}`],
        ...(baseline.instructions ? [['baseline instructions per push', `${Math.round(baseline.instructions.perPush).toLocaleString('en')}  (idle: ${Math.round(baseline.instructions.idlePerS).toLocaleString('en')}/s)`] as [string, string]] : []),
        ['ratio to baseline', `pushes/s ${report.ratio_to_baseline.pushes_per_s} · CPU per push ${report.ratio_to_baseline.cpu_ms_per_push}${'instructions_per_push' in report.ratio_to_baseline ? ` · instructions per push ${report.ratio_to_baseline.instructions_per_push}` : ''}  (ours / baseline)`],
      );
    }
    if (stalls) table.push(['pauses in the push phase', `(--stall-report ${options.stallDir})`], ...formatStallReport(stalls));
    const width = Math.max(...table.map(([key]) => key.length));
    let out = '\n' + table.map(([key, value]) => `${key.padEnd(width)}  ${value}`).join('\n') + '\n';
    if (notes.length > 0) out += notes.map((note) => `note: ${note}`).join('\n') + '\n';
    if (samples.length > 0) out += samples.map((line) => `error sample: ${line}`).join('\n') + '\n';
    if (serverErrors.length > 0) out += serverErrors.slice(0, 5).map((line) => `server: ${line}`).join('\n') + '\n';
    if (options.profileDir) out += `CPU profile of push-appserver written to ${options.profileDir}\n`;
    process.stdout.write(out);
    if (options.serverLog) for (const s of servers) process.stdout.write(`--- ${s.name} stderr (last lines) ---\n${s.stderrTail()}\n`);
    if (options.json) process.stdout.write(JSON.stringify(report) + '\n');
    return errorTotal === 0 ? 0 : 1;
  } catch (error) {
    process.stderr.write(`bench: ${(error as Error).message}\n`);
    for (const s of servers) process.stderr.write(`--- ${s.name} stderr (last lines) ---\n${s.stderrTail()}\n`);
    return 1;
  } finally {
    watcher?.stop();
    await Promise.all(servers.map((s) => s.stop(2000)));
    await database?.stop();
    await provider?.stop();
    await peer?.close().catch(() => {});
    await routeServer?.stop();
    removeDir();
    if (options.keep) progress(`kept ${dir}`);
  }
}

process.exitCode = await main();
