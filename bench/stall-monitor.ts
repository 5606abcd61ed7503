/**
 * `--stall-report DIR`: what each process of a run was doing while publishes were slow.
 *
 * Every process of the run (push-appserver and the APNS mock through `--import` of
 * stall-monitor-preload.ts, the load generator in-process) records its garbage collections (kind and
 * pause, from a `gc` PerformanceObserver) and its event-loop stalls (a 1 ms timer that fires more than
 * STALL_MS late) with wall-clock stamps, into DIR/<label>-<pid>.csv. After the run the slowest
 * publishes (at or above the p99) are matched against those intervals. This is how the p99 tail was
 * taken apart (bench/RESULTS.md); the 1 ms timer costs each process a little CPU, so the figures of
 * a run with this option are not the ones to quote.
 */
import { appendFileSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { constants, PerformanceObserver, performance } from 'node:perf_hooks';

const STALL_MS = 3;
/** GC pauses shorter than this are left out of the slow-publish matching (they cannot explain one). */
const MATCH_GC_MS = 1;

type EventKind = 'scavenge' | 'mark-compact' | 'incremental' | 'weak-callbacks' | 'stall';

const GC_KINDS: Record<number, EventKind> = {
  [constants.NODE_PERFORMANCE_GC_MINOR]: 'scavenge',
  [constants.NODE_PERFORMANCE_GC_MAJOR]: 'mark-compact',
  [constants.NODE_PERFORMANCE_GC_INCREMENTAL]: 'incremental',
  [constants.NODE_PERFORMANCE_GC_WEAKCB]: 'weak-callbacks',
};

interface StallEvent {
  kind: EventKind;
  /** Wall clock, ms since the epoch. */
  atMs: number;
  durationMs: number;
}

const PRELOAD = join(dirname(fileURLToPath(import.meta.url)), 'stall-monitor-preload.ts');

/** Creates DIR, or empties it of an earlier run's recordings. */
export function prepareStallDir(dir: string): void {
  mkdirSync(dir, { recursive: true });
  for (const name of readdirSync(dir)) if (/-\d+\.csv$/.test(name)) rmSync(join(dir, name));
}

/** What a child process needs to record itself as `label` into DIR (stall-monitor-preload.ts reads it). */
export function stallMonitorForChild(dir: string, label: string): { env: NodeJS.ProcessEnv; nodeArgs: string[] } {
  return { env: { PUSH_BENCH_STALL_DIR: dir, PUSH_BENCH_STALL_LABEL: label }, nodeArgs: [`--import=${PRELOAD}`] };
}

/** Starts recording in this process; lines are appended to DIR/<label>-<pid>.csv every second and at exit. */
export function startStallMonitor(label: string, dir: string): () => void {
  const file = join(dir, `${label}-${process.pid}.csv`);
  const origin = performance.timeOrigin;
  let lines = '';
  const observer = new PerformanceObserver((list) => {
    for (const entry of list.getEntries()) {
      const kind = GC_KINDS[((entry as { detail?: { kind?: number } }).detail)?.kind ?? -1] ?? 'scavenge';
      lines += `${kind},${(origin + entry.startTime).toFixed(2)},${entry.duration.toFixed(3)}\n`;
    }
  });
  observer.observe({ entryTypes: ['gc'] });
  let last = performance.now();
  const ticker = setInterval(() => {
    const now = performance.now();
    if (now - last > STALL_MS + 1) lines += `stall,${(origin + last).toFixed(2)},${(now - last - 1).toFixed(3)}\n`;
    last = now;
  }, 1);
  ticker.unref();
  const flush = () => {
    if (lines === '') return;
    appendFileSync(file, lines);
    lines = '';
  };
  writeFileSync(file, '');
  const flusher = setInterval(flush, 1000);
  flusher.unref();
  process.on('exit', flush);
  return () => {
    observer.disconnect();
    clearInterval(ticker);
    clearInterval(flusher);
    process.off('exit', flush);
    flush();
  };
}

interface KindSummary {
  count: number;
  total_ms: number;
  max_ms: number;
}

export interface StallReport {
  /** Per process label: GC kinds and stalls inside the timed push window. */
  by_process: Record<string, Partial<Record<EventKind, KindSummary>>>;
  /** Publishes at or above the p99, and how many of them overlap a GC pause or stall of each process. */
  slow_publishes: { threshold_ms: number; count: number; overlapping: Record<string, number>; overlapping_none: number };
}

function readEvents(dir: string): Map<string, StallEvent[]> {
  const byLabel = new Map<string, StallEvent[]>();
  for (const name of readdirSync(dir)) {
    const match = /^(.+)-\d+\.csv$/.exec(name);
    if (!match) continue;
    const events = byLabel.get(match[1]) ?? [];
    for (const line of readFileSync(join(dir, name), 'utf8').split('\n')) {
      const [kind, at, duration] = line.split(',');
      if (duration === undefined) continue;
      events.push({ kind: kind as EventKind, atMs: Number(at), durationMs: Number(duration) });
    }
    byLabel.set(match[1], events);
  }
  return byLabel;
}

/**
 * Summarises DIR for the publishes of the timed window: `sentAtEpochMs[i]`, `latencyMs[i]` (NaN
 * when unanswered), counted from index `firstTimed`.
 */
export function stallReport(dir: string, sentAtEpochMs: Float64Array, latencyMs: Float64Array, firstTimed: number): StallReport {
  const timed: number[] = [];
  let windowStart = Infinity;
  let windowEnd = -Infinity;
  for (let i = firstTimed; i < latencyMs.length; i++) {
    if (Number.isNaN(latencyMs[i])) continue;
    timed.push(i);
    windowStart = Math.min(windowStart, sentAtEpochMs[i]);
    windowEnd = Math.max(windowEnd, sentAtEpochMs[i] + latencyMs[i]);
  }
  const sortedLatencies = timed.map((i) => latencyMs[i]).sort((a, b) => a - b);
  const threshold = sortedLatencies.length === 0 ? Infinity : sortedLatencies[Math.ceil(0.99 * sortedLatencies.length) - 1];
  const slow = timed.filter((i) => latencyMs[i] >= threshold);

  const report: StallReport = {
    by_process: {},
    slow_publishes: { threshold_ms: Number.isFinite(threshold) ? Math.round(threshold * 1000) / 1000 : 0, count: slow.length, overlapping: {}, overlapping_none: 0 },
  };
  const events = readEvents(dir);
  for (const [label, list] of events) {
    const summary: Partial<Record<EventKind, KindSummary>> = {};
    for (const event of list) {
      if (event.atMs + event.durationMs < windowStart || event.atMs > windowEnd) continue;
      const kind = (summary[event.kind] ??= { count: 0, total_ms: 0, max_ms: 0 });
      kind.count += 1;
      kind.total_ms += event.durationMs;
      kind.max_ms = Math.max(kind.max_ms, event.durationMs);
    }
    for (const kind of Object.values(summary)) {
      kind.total_ms = Math.round(kind.total_ms * 10) / 10;
      kind.max_ms = Math.round(kind.max_ms * 10) / 10;
    }
    report.by_process[label] = summary;
    report.slow_publishes.overlapping[label] = 0;
  }
  for (const i of slow) {
    const from = sentAtEpochMs[i];
    const to = from + latencyMs[i];
    let any = false;
    for (const [label, list] of events) {
      const hit = list.some((e) => e.atMs < to && e.atMs + e.durationMs > from && (e.kind === 'stall' || e.durationMs >= MATCH_GC_MS));
      if (hit) {
        report.slow_publishes.overlapping[label] += 1;
        any = true;
      }
    }
    if (!any) report.slow_publishes.overlapping_none += 1;
  }
  return report;
}

/** The report as table lines. */
export function formatStallReport(report: StallReport): Array<[string, string]> {
  const rows: Array<[string, string]> = [];
  const part = (name: string, s: KindSummary | undefined) => (s ? `${name} ${s.count} (${s.total_ms} ms, max ${s.max_ms})` : `${name} 0`);
  for (const [label, s] of Object.entries(report.by_process)) {
    rows.push([`  ${label}`, [part('scavenges', s.scavenge), part('mark-compacts', s['mark-compact']), part('incremental', s.incremental), part(`stalls > ${STALL_MS} ms`, s.stall)].join(' · ')]);
  }
  const { slow_publishes: slow } = report;
  const overlaps = Object.entries(slow.overlapping).map(([label, n]) => `${label} ${n}`).join(', ');
  rows.push(['  publishes ≥ p99', `${slow.count} (≥ ${slow.threshold_ms} ms); overlapping a pause of: ${overlaps}; of none: ${slow.overlapping_none}`]);
  return rows;
}
