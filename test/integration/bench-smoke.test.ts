/**
 * `npm run bench` end to end with a tiny load: the three processes start, every phase completes,
 * nothing fails, and the JSON on the last line of stdout has the keys issue 6 promises.
 * No figure is asserted: timing belongs to the benchmark's own runs, not to the test suite.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../..');

function runBench(args: string[], timeoutMs = 90_000): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolvePromise) => {
    execFile(process.execPath, ['--disable-warning=ExperimentalWarning', join(ROOT, 'bench/run.ts'), ...args], {
      cwd: ROOT,
      timeout: timeoutMs,
      maxBuffer: 16 * 1024 * 1024,
    }, (error, stdout, stderr) => {
      const code = error ? (typeof error.code === 'number' ? error.code : 1) : 0;
      resolvePromise({ code, stdout, stderr });
    });
  });
}

function lastJsonLine(stdout: string): Record<string, any> {
  const lines = stdout.trim().split('\n');
  return JSON.parse(lines[lines.length - 1]) as Record<string, any>;
}

function assertReportShape(report: Record<string, any>): void {
  for (const key of ['pushes_per_s', 'registrations_per_s', 'errors', 'latency_ms', 'rss_peak_mb', 'cpu_s']) {
    assert.ok(key in report, `the JSON has "${key}"`);
  }
  for (const kind of ['result', 'delivery']) {
    for (const p of ['p50', 'p90', 'p99', 'max']) assert.ok(p in report.latency_ms[kind], `latency_ms.${kind}.${p} is present`);
  }
  assert.equal(typeof report.pushes_per_s, 'number');
  assert.equal(typeof report.registrations_per_s, 'number');
  assert.equal(typeof report.rss_peak_mb, 'number');
  assert.equal(typeof report.cpu_s, 'number');
  assert.equal(typeof report.latency_ms.result.p99, 'number');
}

test('a tiny benchmark run through the APNS mock completes with zero errors and reports delivery latency', async () => {
  const { code, stdout, stderr } = await runBench(['--devices', '20', '--pushes', '50', '--concurrency', '10', '--provider', 'apns', '--json']);
  assert.equal(code, 0, `bench exited ${code}\n${stdout}\n${stderr}`);
  const report = lastJsonLine(stdout);
  assertReportShape(report);
  assert.equal(report.errors, 0, JSON.stringify(report.errors_by_type));
  assert.equal(report.counts.pushes_answered, 50 + report.parameters.warmup);
  assert.equal(typeof report.latency_ms.delivery.p50, 'number');
  assert.equal(typeof report.cpu_ms_per_push_kernel, 'number');
  assert.ok(report.cpu_ms_per_push_kernel <= report.cpu_ms_per_push, 'the kernel share is part of the whole');
});

test('a tiny benchmark run with the dry-run provider at a fixed offered rate completes with zero errors', async () => {
  const { code, stdout, stderr } = await runBench(['--devices', '20', '--pushes', '50', '--rate', '500', '--provider', 'log', '--json']);
  assert.equal(code, 0, `bench exited ${code}\n${stdout}\n${stderr}`);
  const report = lastJsonLine(stdout);
  assertReportShape(report);
  assert.equal(report.errors, 0, JSON.stringify(report.errors_by_type));
  assert.equal(report.latency_ms.delivery.p50, null, 'the dry-run provider has no delivery to time');
  assert.equal(report.parameters.rate, 500);
});

test('a tiny --scale run seeds the store directly and pushes to seeded and registered devices with zero errors', async () => {
  const { code, stdout, stderr } = await runBench(['--devices', '20', '--pushes', '50', '--scale-registrations', '2000', '--provider', 'apns', '--json']);
  assert.equal(code, 0, `bench exited ${code}\n${stdout}\n${stderr}`);
  const report = lastJsonLine(stdout);
  assertReportShape(report);
  assert.equal(report.errors, 0, JSON.stringify(report.errors_by_type));
  assert.equal(report.parameters.registrations_in_store, 2020);
  assert.match(report.notes.join('\n'), /seeded straight into SQLite/);
});

test('a tiny --stall-report run records every process and matches the slowest publishes against their pauses', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'push-appserver-stalls-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const { code, stdout, stderr } = await runBench(['--devices', '20', '--pushes', '200', '--rate', '400', '--provider', 'apns', '--stall-report', dir, '--json']);
  assert.equal(code, 0, `bench exited ${code}\n${stdout}\n${stderr}`);
  const report = lastJsonLine(stdout);
  assert.equal(report.errors, 0, JSON.stringify(report.errors_by_type));
  assert.deepEqual(Object.keys(report.stalls.by_process).sort(), ['load-generator', 'mock', 'push-appserver']);
  const slow = report.stalls.slow_publishes;
  assert.ok(slow.count >= 2, 'at least the top 1 % of 200 publishes');
  assert.equal(slow.threshold_ms, report.latency_ms.result.p99);
  const matched = Object.values(slow.overlapping as Record<string, number>).every((n) => Number.isInteger(n) && n >= 0 && n <= slow.count);
  assert.ok(matched && slow.overlapping_none <= slow.count);
  assert.match(stdout, /publishes ≥ p99/);
});

test('a tiny --baseline run also pushes through the bench\'s bare forwarder and reports both CPU per push and their ratios', async () => {
  const { code, stdout, stderr } = await runBench(['--devices', '20', '--pushes', '50', '--concurrency', '10', '--provider', 'apns', '--baseline', '--json']);
  assert.equal(code, 0, `bench exited ${code}\n${stdout}\n${stderr}`);
  const report = lastJsonLine(stdout);
  assertReportShape(report);
  assert.equal(report.errors, 0, JSON.stringify(report.errors_by_type));
  assert.equal(report.parameters.baseline, true);
  assert.equal(report.baseline.pushes_timed, 50, 'every counted publish was answered by the forwarder');
  assert.equal(typeof report.baseline.latency_ms.delivery.p50, 'number', 'the forwarder\'s requests reached the APNS mock');
  for (const key of ['pushes_per_s', 'cpu_ms_per_push']) {
    assert.ok(key in report.baseline, `baseline.${key} is present`);
    assert.ok(key in report.ratio_to_baseline, `ratio_to_baseline.${key} is present`);
  }
  assert.ok('cpu_ms_per_push' in report);
});

test('a tiny --callgrind --baseline run counts the instructions push-appserver and the forwarder execute per counted push and per idle second', { timeout: 600_000 }, async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'bench-callgrind-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const { code, stdout, stderr } = await runBench(['--devices', '10', '--pushes', '30', '--warmup', '30', '--concurrency', '5', '--provider', 'apns', '--baseline', '--callgrind', dir, '--json'], 540_000);
  assert.equal(code, 0, `bench exited ${code}\n${stdout}\n${stderr}`);
  const report = lastJsonLine(stdout);
  assert.equal(report.errors, 0, JSON.stringify(report.errors_by_type));
  assert.equal(report.counts.pushes_timed, 30);
  assert.equal(report.baseline.pushes_timed, 30);
  // A publish is parsed, signed into an HTTP/2 request over TLS and answered: far more than
  // 100,000 instructions, and far fewer than 100 million. Ours also looks up and checks it.
  for (const [who, perPush] of [['push-appserver', report.instructions_per_push], ['forwarder', report.baseline.instructions_per_push]]) {
    assert.ok(perPush > 100_000 && perPush < 100_000_000, `${who}: instructions per push ${perPush}`);
  }
  assert.ok(report.instructions_per_push > report.baseline.instructions_per_push, 'push-appserver does more per push than the bare forwarder');
  const ratio = report.instructions_per_push / report.baseline.instructions_per_push;
  assert.ok(Math.abs(report.ratio_to_baseline.instructions_per_push - ratio) <= 0.01, `ratio_to_baseline.instructions_per_push ${report.ratio_to_baseline.instructions_per_push}, ours / theirs ${ratio}`);
  assert.ok(report.idle_instructions_per_s > 0 && report.baseline.idle_instructions_per_s > 0, 'an idle process still runs its timers');
  assert.ok(readdirSync(dir).some((name) => name.startsWith('callgrind.out.')), 'push-appserver\'s dumps are in the directory');
  assert.ok(readdirSync(join(dir, 'baseline')).some((name) => name.startsWith('callgrind.out.')), 'the forwarder\'s dumps are in DIR/baseline');
});

/** A tiny run through a real XMPP server: every publish answered, none in error, the server's own CPU reported. */
async function runVia(server: 'prosody' | 'ejabberd', pushes: number, extra: string[]): Promise<Record<string, any>> {
  const { code, stdout, stderr } = await runBench(['--devices', '20', '--pushes', String(pushes), '--concurrency', '10', '--provider', 'apns', '--via', server, ...extra, '--json'], 120_000);
  assert.equal(code, 0, `bench exited ${code}\n${stdout}\n${stderr}`);
  const report = lastJsonLine(stdout);
  assertReportShape(report);
  assert.equal(report.errors, 0, JSON.stringify(report.errors_by_type));
  assert.equal(report.parameters.via, server);
  assert.equal(report.counts.pushes_answered, pushes + report.parameters.warmup);
  assert.ok(report.xmpp_server_cpu_ms_per_push > 0, `${server} did work for the publishes it routed (xmpp_server_cpu_ms_per_push)`);
  assert.match(stdout, new RegExp(`publishes via a real ${server === 'prosody' ? 'Prosody' : 'ejabberd'}`));
  return report;
}

test('a tiny --via prosody --baseline run routes every publish and answer through a real Prosody, for ours and the forwarder alike', async () => {
  const report = await runVia('prosody', 50, ['--baseline']);
  assert.equal(report.baseline.pushes_timed, 50, 'the forwarder answered every counted publish through Prosody');
});

test('a tiny --via ejabberd run with two instances on PostgreSQL: ejabberd spreads the publishes over both connections and every one is answered', async () => {
  const report = await runVia('ejabberd', 60, ['--store', 'postgres', '--instances', '2']);
  const [first, second] = report.counts.publishes_by_connection as number[];
  assert.equal(first + second, 60 + report.parameters.warmup, 'each publish reached one instance (their own counts)');
  assert.ok(first > 0 && second > 0, `both instances got publishes (${first} and ${second})`);
});
