/**
 * Loaded with `node --import` into push-appserver and the APNS mock when the benchmark runs with
 * `--stall-report` (stall-monitor.ts): records this process's GC pauses and event-loop stalls.
 */
import { isMainThread } from 'node:worker_threads';
import { startStallMonitor } from './stall-monitor.ts';

const dir = process.env.PUSH_BENCH_STALL_DIR;
const label = process.env.PUSH_BENCH_STALL_LABEL;
if (dir && label && isMainThread) startStallMonitor(label, dir);
