/**
 * Loopback ports for tests. Never assume 5222/5269/5280/5347 (or port 1) are free or closed.
 *
 * - A server we start ourselves binds port 0 and reads its port back: no race at all.
 * - A child that needs its port in a config file gets one from `freePort()`, but the port is free
 *   only when asked: whoever starts the child must check that the listener is the child (see
 *   `listenerIsProcess`) and try again on another port otherwise.
 * - A test that needs "nobody listens here" holds a `closedPort()`: connections to it are refused
 *   for as long as the test holds it, and nobody else can bind it meanwhile.
 */
import { existsSync, readFileSync, readdirSync, readlinkSync } from 'node:fs';
import { connect, createServer, type Server, type Socket } from 'node:net';

/** A port that was free a moment ago (the kernel's pick for port 0). Prefer binding port 0 yourself. */
export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as { port: number };
      server.close(() => resolve(port));
    });
  });
}

export interface ClosedPort {
  port: number;
  /** Lets the port go (then it is an ordinary free port again). */
  release(): Promise<void>;
}

/**
 * A loopback port held closed: the local end of a connection we keep open between two of our own
 * sockets. Nothing listens on it, so a connection attempt is refused (ECONNREFUSED), and since the
 * port is bound (without SO_REUSEADDR) no other process can bind it until `release()`.
 */
export async function closedPort(): Promise<ClosedPort> {
  const accepted: Socket[] = [];
  const holder: Server = createServer((socket) => { accepted.push(socket); });
  await new Promise<void>((resolve, reject) => {
    holder.once('error', reject);
    holder.listen(0, '127.0.0.1', () => resolve());
  });
  const client = connect({ host: '127.0.0.1', port: (holder.address() as { port: number }).port });
  await new Promise<void>((resolve, reject) => {
    client.once('connect', () => resolve());
    client.once('error', reject);
  });
  // Neither end sends anything; errors (e.g. the process exiting) must not crash the test.
  client.on('error', () => {});
  client.unref();
  holder.unref();
  return {
    port: client.localPort!,
    async release() {
      client.destroy();
      for (const socket of accepted) socket.destroy();
      await new Promise<void>((resolve) => holder.close(() => resolve()));
    },
  };
}

/** The inode of the socket listening on 127.0.0.1:`port`, from /proc/net/tcp; undefined when none. */
function listeningInode(port: number): string | undefined {
  const table = readFileSync('/proc/net/tcp', 'utf8');
  const wanted = `0100007F:${port.toString(16).toUpperCase().padStart(4, '0')}`;
  for (const line of table.split('\n').slice(1)) {
    const fields = line.trim().split(/\s+/);
    // fields: sl local_address rem_address st ... inode (10th)
    if (fields[1] === wanted && fields[3] === '0A') return fields[9];
  }
  return undefined;
}

/**
 * Whether the socket listening on 127.0.0.1:`port` belongs to process `pid` (Linux /proc).
 * `undefined` when /proc cannot tell (not Linux): callers then rely on other signs (the child's log).
 */
export function listenerIsProcess(port: number, pid: number): boolean | undefined {
  if (!existsSync('/proc/net/tcp')) return undefined;
  const inode = listeningInode(port);
  if (inode === undefined) return false;
  let fds: string[];
  try {
    fds = readdirSync(`/proc/${pid}/fd`);
  } catch {
    return false;
  }
  const target = `socket:[${inode}]`;
  return fds.some((fd) => {
    try {
      return readlinkSync(`/proc/${pid}/fd/${fd}`) === target;
    } catch {
      return false;
    }
  });
}

/**
 * Whether the socket listening on 127.0.0.1:`port` belongs to a process of process group `pgid`
 * (Linux /proc): for a child that is a launcher script whose descendant listens (ejabberdctl → beam).
 * `undefined` when /proc cannot tell.
 */
export function listenerInProcessGroup(port: number, pgid: number): boolean | undefined {
  if (!existsSync('/proc/net/tcp')) return undefined;
  if (listeningInode(port) === undefined) return false;
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    let stat: string;
    try {
      stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
    } catch {
      continue;
    }
    // Fields after "(comm)": state ppid pgrp …; comm may hold spaces, so split after the last ')'.
    const pgrp = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[2]);
    if (pgrp === pgid && listenerIsProcess(port, Number(entry))) return true;
  }
  return false;
}
