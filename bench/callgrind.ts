/**
 * Instruction counts of push-appserver under valgrind's callgrind (`npm run bench -- --callgrind DIR`).
 *
 * CPU time on these VMs depends on how long the vCPU idled before the work (bench/idle-penalty.ts:
 * the same computation costs up to 3× after idle spells), so a CPU-time ratio between a low offered
 * rate and the closed loop mixes our code with the machine. Instructions executed in user space do
 * not: callgrind counts the same total for the same work whatever else the machine does. What the
 * kernel does for our system calls is not counted (strace -c counts those; bench/RESULTS.md).
 *
 * The server runs roughly 50× slower under callgrind, so the bench keeps the load small, and
 * counts between two quiet moments: counters zeroed with nothing in flight, read back (a dump) once
 * the last counted publish is answered.
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { runPushPhase, type PushPhaseOptions, type PushPhaseResult } from './push-load.ts';

/** The command line that runs `command args` under callgrind, its dumps in `dir`. */
export function underCallgrind(dir: string, command: string, args: string[]): { command: string; args: string[] } {
  mkdirSync(dir, { recursive: true });
  return {
    command: 'valgrind',
    // trace-children: bin/push-appserver is a shell script that execs node.
    args: ['--tool=callgrind', '--trace-children=yes', `--callgrind-out-file=${join(dir, 'callgrind.out.%p')}`, command, ...args],
  };
}

export function callgrindAvailable(): boolean {
  try {
    execFileSync('valgrind', ['--version'], { stdio: 'ignore' });
    execFileSync('callgrind_control', ['--version'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

/** Sets the running process's counters to zero. */
export function zeroInstructions(pid: number): void {
  execFileSync('callgrind_control', ['--zero', String(pid)], { stdio: 'ignore', timeout: 120_000 });
}

/** Dumps the counters (which zeroes them) and returns the instructions counted since the last zero or dump, all threads. */
export function dumpInstructions(pid: number, dir: string): number {
  const before = new Set(readdirSync(dir));
  execFileSync('callgrind_control', ['--dump', String(pid)], { stdio: 'ignore', timeout: 120_000 });
  const fresh = readdirSync(dir)
    .filter((name) => name.startsWith(`callgrind.out.${pid}`) && !before.has(name))
    .sort((a, b) => statSync(join(dir, b)).mtimeMs - statSync(join(dir, a)).mtimeMs);
  if (fresh.length === 0) throw new Error(`callgrind_control --dump ${pid} wrote no file into ${dir}`);
  // With --separate-threads=no (the default) one file holds all threads; "summary:" is its total of the first event, Ir.
  return summaryInstructions(readFileSync(join(dir, fresh[0]), 'utf8'));
}

export function summaryInstructions(dump: string): number {
  const line = /^(?:summary|totals):\s*(\d+)/m.exec(dump);
  if (!line) throw new Error('a callgrind dump without a summary line');
  return Number(line[1]);
}

export interface InstructionCount {
  /** User-space instructions per counted push, all threads. */
  perPush: number;
  /** While idle with every timer running, per second: what each second of a run costs whatever the load. */
  idlePerS: number;
  idleS: number;
}

export const IDLE_S = 10;
/** Before the idle count: what the warm-up left to do later (a bookkeeping flush, a WAL checkpoint, V8's idle-time GC) is not idling. */
const SETTLE_S = 5;

/**
 * A push phase under callgrind, the same for push-appserver and the bench's forwarder: the warm-up,
 * all of it answered; SETTLE_S seconds uncounted; the idle cost over IDLE_S seconds; counters
 * zeroed; the counted publishes; the dump. The warm-up is closed loop whatever `phase.rate` says:
 * it is there for the JIT, whose tiering counts calls, and at a low rate under valgrind it would
 * take minutes. The callbacks see one numbering as in a plain run: the warm-up's publishes first,
 * counted ones from `phase.warmup`.
 */
export async function pushPhaseUnderCallgrind(pid: number, dir: string, phase: PushPhaseOptions): Promise<{ push: PushPhaseResult; instructions: InstructionCount }> {
  const { onSent, onAnswered, warmup } = phase;
  if (warmup > 0) {
    const warm = await runPushPhase({ ...phase, pushes: warmup, warmup: 0, rate: undefined, onCountingStarts: undefined });
    if (warm.completed !== warmup) throw new Error(`the warm-up under callgrind got ${warm.completed} of ${warmup} answers`);
  }
  await sleep(SETTLE_S * 1000);
  zeroInstructions(pid);
  const idleFrom = performance.now();
  await sleep(IDLE_S * 1000);
  const idle = dumpInstructions(pid, dir);
  const idlePerS = idle / ((performance.now() - idleFrom) / 1000);
  zeroInstructions(pid);
  const push = await runPushPhase({
    ...phase,
    warmup: 0,
    onSent: onSent ? (index, token, at) => onSent(index + warmup, token, at) : undefined,
    onAnswered: onAnswered ? (index, ok, error) => onAnswered(index + warmup, ok, error) : undefined,
  });
  const perPush = push.timedCompleted === 0 ? 0 : dumpInstructions(pid, dir) / push.timedCompleted;
  return { push, instructions: { perPush, idlePerS, idleS: IDLE_S } };
}

/** The report's figures for one process. */
export function instructionFigures(count: InstructionCount): { instructions_per_push: number; idle_instructions_per_s: number } {
  return { instructions_per_push: Math.round(count.perPush), idle_instructions_per_s: Math.round(count.idlePerS) };
}
