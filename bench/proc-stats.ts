/**
 * Resident memory and CPU time of another process, read from Linux procfs (proc(5)):
 * `/proc/<pid>/status` VmRSS/VmHWM (kB) and `/proc/<pid>/stat` fields 14–15 utime/stime (clock ticks).
 * VmHWM is the kernel's own high-water mark, so a peak between two samples is not missed.
 */
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';

export interface ProcSample {
  rssMb: number;
  peakRssMb: number;
  cpuS: number;
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
