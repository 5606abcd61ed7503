/**
 * A real PostgreSQL (Debian's postgresql) for tests and the bench: `initdb` in a temp dir, the
 * server in the foreground as a child process on a free loopback port, its unix socket inside the
 * temp dir, stopped and removed at the end. As root, the server runs as the `postgres` user (it
 * refuses to run as root) and the temp dir belongs to that user.
 *
 * A missing PostgreSQL is a failure with the command that installs it, never a silent skip
 * (real-parts.ts).
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { chownSync, existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import postgres from 'postgres';
import { freePort } from './ports.ts';
import { integrationSkipped, missingPart } from './real-parts.ts';

export const USER = 'push';
export const PASSWORD = 'push-test-password';

export function postgresBinDir(): string | undefined {
  const candidates: string[] = [];
  try {
    candidates.push(execFileSync('pg_config', ['--bindir'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim());
  } catch {
    // pg_config is in libpq-dev; Debian's server binaries live here either way.
  }
  candidates.push('/usr/lib/postgresql/17/bin', '/usr/lib/postgresql/16/bin', '/usr/lib/postgresql/15/bin');
  return candidates.find((dir) => existsSync(join(dir, 'initdb')) && existsSync(join(dir, 'postgres')));
}

/** For `test(..., { skip: postgresMissing() })`: run (and fail if it is missing) unless integration tests were opted out of. */
export function postgresMissing(): string | false {
  if (postgresBinDir() !== undefined) return false;
  // Missing: the tests run and fail saying how to install it, unless opted out (ignored under CI).
  return integrationSkipped('a PostgreSQL server');
}

export interface PostgresInstance {
  dir: string;
  port: number;
  /** `postgres://push:…@127.0.0.1:PORT/NAME` */
  url(database: string): string;
  /** A new empty database; the name is returned. */
  createDatabase(prefix?: string): Promise<string>;
  /** Every backend of a database is terminated (a lost connection, as a database failover looks). */
  terminateConnections(database: string): Promise<number>;
  /** Stops the server (fast shutdown), keeps its data. */
  halt(): Promise<void>;
  /** Starts it again on the same port after halt(). */
  resume(): Promise<void>;
  stop(): Promise<void>;
  logText(): string;
}

function serverUser(): { uid: number; gid: number } | undefined {
  if (process.getuid?.() !== 0) return undefined;
  const uid = Number(execFileSync('id', ['-u', 'postgres'], { encoding: 'utf8' }).trim());
  const gid = Number(execFileSync('id', ['-g', 'postgres'], { encoding: 'utf8' }).trim());
  return { uid, gid };
}

let databases = 0;

export interface PostgresOptions {
  /** PEM server certificate and key: the server then offers TLS (ssl=on). */
  tls?: { cert: string; key: string };
}

export async function startPostgres(options: PostgresOptions = {}): Promise<PostgresInstance> {
  const bin = postgresBinDir();
  if (!bin) throw missingPart('PostgreSQL', 'apt-get install postgresql (the tests start their own server in a temp dir; .ci/run installs it)');
  const owner = serverUser();
  const dir = mkdtempSync(join(tmpdir(), 'push-appserver-postgres-'));
  const data = join(dir, 'data');
  const socketDir = join(dir, 'socket');
  mkdirSync(socketDir);
  const pwfile = join(dir, 'pwfile');
  writeFileSync(pwfile, `${PASSWORD}\n`);
  const owned = [dir, socketDir, pwfile];
  const tlsSettings: string[] = [];
  if (options.tls) {
    // The server refuses a key file that others can read.
    writeFileSync(join(dir, 'server.crt'), options.tls.cert);
    writeFileSync(join(dir, 'server.key'), options.tls.key, { mode: 0o600 });
    owned.push(join(dir, 'server.crt'), join(dir, 'server.key'));
    tlsSettings.push('-c', 'ssl=on', '-c', `ssl_cert_file=${join(dir, 'server.crt')}`, '-c', `ssl_key_file=${join(dir, 'server.key')}`);
  }
  if (owner) for (const path of owned) chownSync(path, owner.uid, owner.gid);
  const as = owner ? { uid: owner.uid, gid: owner.gid } : {};
  try {
    execFileSync(join(bin, 'initdb'), ['-D', data, '-U', USER, `--pwfile=${pwfile}`, '--auth=scram-sha-256', '-E', 'UTF8', '--no-sync', '--locale=C'],
      { ...as, cwd: dir, stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, LC_ALL: 'C' } });
  } catch (error) {
    rmSync(dir, { recursive: true, force: true });
    const stderr = String((error as { stderr?: Buffer }).stderr ?? '');
    throw new Error(`initdb failed: ${(error as Error).message}\n${stderr}`);
  }

  let port = 0;
  let child: ChildProcess | undefined;
  let log = '';
  const launch = async (fixedPort?: number): Promise<void> => {
    // The probed port may be taken before the server binds it: then try another (unless it must stay).
    for (let attempt = 0; attempt < 5; attempt++) {
      port = fixedPort ?? await freePort();
      const started = spawn(join(bin, 'postgres'), [
        '-D', data, '-p', String(port), '-k', socketDir, '-c', 'listen_addresses=127.0.0.1',
        '-c', 'fsync=off', '-c', 'synchronous_commit=off', '-c', 'full_page_writes=off', '-c', 'max_connections=200',
        '-c', 'shared_buffers=32MB', '-c', 'log_min_messages=warning', ...tlsSettings,
      ], { ...as, cwd: dir, stdio: ['ignore', 'ignore', 'pipe'], env: { ...process.env, LC_ALL: 'C' } });
      const outcome = await new Promise<'ready' | 'port' | 'exit'>((resolve) => {
        started.stderr!.setEncoding('utf8');
        started.stderr!.on('data', (chunk: string) => {
          log += chunk;
          if (chunk.includes('ready to accept connections')) resolve('ready');
          if (chunk.includes('could not bind') || chunk.includes('Address already in use')) resolve('port');
        });
        started.once('exit', () => resolve('exit'));
      });
      if (outcome === 'ready') {
        child = started;
        return;
      }
      if (started.exitCode === null) started.kill('SIGKILL');
      if (outcome === 'exit' || fixedPort !== undefined) break;
    }
    throw new Error(`PostgreSQL did not start:\n${log.split('\n').slice(-20).join('\n')}`);
  };
  const halt = async (): Promise<void> => {
    const running = child;
    child = undefined;
    if (!running || running.exitCode !== null) return;
    const exited = new Promise((resolve) => running.once('exit', resolve));
    running.kill('SIGINT'); // fast shutdown: clients are disconnected
    const timer = setTimeout(() => running.kill('SIGKILL'), 10_000);
    await exited;
    clearTimeout(timer);
  };
  const url = (database: string) => `postgres://${USER}:${PASSWORD}@127.0.0.1:${port}/${database}`;
  const admin = async <T>(work: (sql: postgres.Sql) => Promise<T>): Promise<T> => {
    const sql = postgres(url('postgres'), { max: 1, onnotice: () => {} });
    try {
      return await work(sql);
    } finally {
      await sql.end({ timeout: 5 });
    }
  };

  try {
    await launch();
  } catch (error) {
    rmSync(dir, { recursive: true, force: true });
    throw error;
  }
  const onExit = () => child?.kill('SIGKILL');
  process.once('exit', onExit);
  return {
    dir,
    get port() { return port; },
    url,
    async createDatabase(prefix = 'test') {
      databases += 1;
      const name = `${prefix}_${process.pid}_${databases}`.toLowerCase().replace(/[^a-z0-9_]/g, '_');
      await admin((sql) => sql.unsafe(`CREATE DATABASE ${name}`));
      return name;
    },
    async terminateConnections(database) {
      return await admin(async (sql) => (await sql`
        SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = ${database} AND pid <> pg_backend_pid()`).length);
    },
    halt,
    async resume() {
      await launch(port);
    },
    async stop() {
      await halt();
      process.off('exit', onExit);
      if (process.env.KEEP_POSTGRES_DIR !== '1') rmSync(dir, { recursive: true, force: true });
    },
    logText: () => log,
  };
}
