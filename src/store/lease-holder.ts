/**
 * Who holds a retry's lease, so that a restart takes back what a killed process held instead of
 * waiting out the lease (2 × push.timeout_ms + 5 s). A holder is named by what makes a Linux
 * process unique over time and space: the machine's boot, its pid namespace, its pid and its start
 * time. Another process can tell that a holder is gone only when it shares the boot and the pid
 * namespace; otherwise (another machine, another container, no /proc) it cannot, and that lease
 * runs out as it always did. When in doubt a holder counts as running: a lease taken back from a
 * live process would send its push twice.
 */
import { readFileSync, readlinkSync } from 'node:fs';

export type HolderState = 'running' | 'gone' | 'unknown';

interface Holder {
  boot: string;
  namespace: string;
  pid: number;
  startTime: string;
}

/** Field 22 of /proc/PID/stat (start time in clock ticks since boot) and field 3 (state); undefined when unreadable. */
function processStat(pid: number): { state: string; startTime: string } | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // The command name (field 2) may hold spaces and parentheses: fields are counted after its last ')'.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return { state: fields[0], startTime: fields[19] };
  } catch {
    return undefined;
  }
}

function thisMachine(): { boot: string; namespace: string } | undefined {
  try {
    return { boot: readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim(), namespace: readlinkSync('/proc/self/ns/pid') };
  } catch {
    return undefined;
  }
}

function parse(holder: string): Holder | undefined {
  const [kind, boot, namespace, pid, startTime, ...rest] = holder.split('|');
  if (kind !== 'linux' || rest.length > 0 || !/^[1-9][0-9]*$/.test(pid ?? '') || !startTime) return undefined;
  return { boot, namespace, pid: Number(pid), startTime };
}

/** A process of this machine and pid namespace as a lease holder; null where it cannot be named so that others could tell it is gone. */
export function holderOfProcess(pid: number): string | null {
  const machine = thisMachine();
  const stat = processStat(pid);
  if (!machine || !stat) return null;
  return ['linux', machine.boot, machine.namespace, pid, stat.startTime].join('|');
}

export function thisProcessHolder(): string | null {
  return holderOfProcess(process.pid);
}

/** Whether the process that wrote `holder` still runs, as far as this process can tell. */
export function holderState(holder: string): HolderState {
  const parsed = parse(holder);
  const machine = thisMachine();
  if (!parsed || !machine || parsed.boot !== machine.boot || parsed.namespace !== machine.namespace) return 'unknown';
  try {
    process.kill(parsed.pid, 0);
  } catch (error) {
    // EPERM: a process of another user has that pid; it may be the holder.
    return (error as NodeJS.ErrnoException).code === 'ESRCH' ? 'gone' : 'running';
  }
  const stat = processStat(parsed.pid);
  if (!stat) return 'running';
  // Another process that got the pid since, or the holder killed and not yet reaped by its parent.
  if (stat.startTime !== parsed.startTime || stat.state === 'Z' || stat.state === 'X') return 'gone';
  return 'running';
}

export interface LeaseHolderOptions {
  /** Who a store's leases name as their holder (default: this process; null names none). */
  leaseHolder?: string | null;
  /** Whether a holder still runs (default: holderState, which asks the operating system). */
  holderState?: (holder: string) => HolderState;
}

/** A store's side of it: the holder its leases name, and which other holders' leases it may take back. */
export class LeaseHolders {
  readonly own: string | null;
  private readonly state: (holder: string) => HolderState;

  constructor(options: LeaseHolderOptions = {}) {
    this.own = options.leaseHolder === undefined ? thisProcessHolder() : options.leaseHolder;
    this.state = options.holderState ?? holderState;
  }

  /** Another holder that no longer runs, as far as this process can tell. */
  isGone(holder: string): boolean {
    return holder !== this.own && this.state(holder) === 'gone';
  }
}
