/**
 * Resident memory and CPU time of another process, read from Linux procfs (proc(5)):
 * `/proc/<pid>/status` VmRSS/VmHWM (kB) and `/proc/<pid>/stat` fields 14–15 utime/stime (clock ticks).
 * VmHWM is the kernel's own high-water mark, so a peak between two samples is not missed.
 */
import { execFileSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';

export interface ProcSample {
  rssMb: number;
  peakRssMb: number;
  cpuS: number;
  /** The kernel's share of cpuS (stime): system calls, page faults, and what they wait on in the kernel. */
  systemCpuS: number;
}

let ticksPerSecond: number | undefined;

function clockTicks(): number {
  if (ticksPerSecond === undefined) {
    try {
      ticksPerSecond = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
    } catch {
      ticksPerSecond = 100;
    }
  }
  return ticksPerSecond;
}

function statusKb(status: string, key: string): number {
  const match = new RegExp(`^${key}:\\s+(\\d+) kB`, 'm').exec(status);
  return match ? Number(match[1]) : 0;
}

/** undefined when the process is gone. */
export function sampleProcess(pid: number): ProcSample | undefined {
  try {
    const status = readFileSync(`/proc/${pid}/status`, 'utf8');
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // The command name (field 2) may hold spaces and parentheses: count fields after the last ')'.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    const utime = Number(fields[11]);
    const stime = Number(fields[12]);
    return {
      rssMb: statusKb(status, 'VmRSS') / 1024,
      peakRssMb: statusKb(status, 'VmHWM') / 1024,
      cpuS: (utime + stime) / clockTicks(),
      systemCpuS: stime / clockTicks(),
    };
  } catch {
    return undefined;
  }
}

/** Samples a process every interval, keeping the highest RSS seen and the last sample. */
export class ProcessWatcher {
  private readonly pid: number;
  private timer: NodeJS.Timeout | undefined;
  last: ProcSample | undefined;
  maxRssMb = 0;

  constructor(pid: number, intervalMs = 200) {
    this.pid = pid;
    this.sample();
    this.timer = setInterval(() => this.sample(), intervalMs);
    this.timer.unref();
  }

  sample(): ProcSample | undefined {
    const sample = sampleProcess(this.pid);
    if (sample) {
      this.last = sample;
      this.maxRssMb = Math.max(this.maxRssMb, sample.rssMb, sample.peakRssMb);
    }
    return sample ?? this.last;
  }

  stop(): void {
    clearInterval(this.timer);
    this.timer = undefined;
  }
}

/** Several processes watched as one (--instances): CPU summed over them, RSS of the largest. */
export class GroupWatcher {
  private readonly watchers: ProcessWatcher[];

  constructor(pids: number[], intervalMs = 200) {
    this.watchers = pids.map((pid) => new ProcessWatcher(pid, intervalMs));
  }

  get maxRssMb(): number {
    return Math.max(0, ...this.watchers.map((w) => w.maxRssMb));
  }

  sample(): ProcSample | undefined {
    const samples = this.watchers.map((w) => w.sample());
    if (samples.some((s) => s === undefined)) return undefined;
    return {
      rssMb: Math.max(...samples.map((s) => s!.rssMb)),
      peakRssMb: Math.max(...samples.map((s) => s!.peakRssMb)),
      cpuS: samples.reduce((sum, s) => sum + s!.cpuS, 0),
      systemCpuS: samples.reduce((sum, s) => sum + s!.systemCpuS, 0),
    };
  }

  stop(): void {
    for (const watcher of this.watchers) watcher.stop();
  }
}

/**
 * CPU seconds of a process tree one level deep (a PostgreSQL postmaster and its backends): the
 * process itself, its live children, and its children that exited (cutime/cstime, once reaped).
 */
export function processTreeCpuS(pid: number): number | undefined {
  const ticks = clockTicks();
  const fieldsOf = (p: string): string[] | undefined => {
    try {
      const stat = readFileSync(`/proc/${p}/stat`, 'utf8');
      return stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    } catch {
      return undefined;
    }
  };
  const own = fieldsOf(String(pid));
  if (!own) return undefined;
  // After the command name: [0] state, [1] ppid, … [11] utime, [12] stime, [13] cutime, [14] cstime.
  let total = Number(own[11]) + Number(own[12]) + Number(own[13]) + Number(own[14]);
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry) || entry === String(pid)) continue;
    const fields = fieldsOf(entry);
    if (fields && Number(fields[1]) === pid) total += Number(fields[11]) + Number(fields[12]);
  }
  return total / ticks;
}
