/**
 * Micro-benchmark of `getByNode` batching (src/store/lookup-batch.ts), in process: a store with
 * 2,000 registrations, lookups issued k per turn (k = 1, 5, 20, 100; each group awaited before the
 * next, so each group is one batch), timed before (one statement or query per lookup, as
 * getByNode did before batching) and after (the store's batched getByNode), taking turns in
 * slices; the first round warms up and is not counted; figures are medians over the rounds.
 *
 *   node bench/lookup-batch.ts [--store sqlite|postgres|both] [--rounds 6] [--lookups 20000]
 *
 * SQLite: a file in a temp dir (WAL, as served); "before" is the same statement on a connection of
 * its own. A second table compares the SQL a batch could use (k statements, BEGIN … COMMIT around
 * them, one statement over a JSON array), without the batching around it.
 *
 * PostgreSQL: a server started like the tests' (test/support/postgres.ts) on the same machine;
 * "before" is the same single-row query on a pool of its own sized like the store's. The figures
 * add the server's CPU per lookup (the postmaster and its backends, from procfs: counted in clock
 * ticks of 10 ms, so only the larger differences mean something).
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import { parseArgs } from 'node:util';
import postgres from 'postgres';
import { PostgresStore, DEFAULT_POOL_SIZE } from '../src/store/postgres.ts';
import { toRegistration, withUnwritten, type PendingStats, type RegistrationRow } from '../src/store/rows.ts';
import { SqliteStore } from '../src/store/sqlite.ts';
import type { Registration, Store } from '../src/store/types.ts';
import { startPostgres, type PostgresInstance } from '../test/support/postgres.ts';
import { processTreeCpuS } from './proc-stats.ts';

const REGISTRATIONS = 2000;
const PER_TURN = [1, 5, 20, 100];

const { values: args } = parseArgs({
  options: {
    store: { type: 'string', default: 'both' },
    rounds: { type: 'string', default: '6' },
    lookups: { type: 'string' },
  },
});
const rounds = Number(args.rounds);

type Lookup = (node: string) => Promise<Registration | undefined>;

interface Figures {
  wallUs: number;
  cpuUs: number;
  serverCpuUs?: number;
}

function registrationOf(index: number): Registration {
  return {
    node: `${(index * 2654435761 % 2 ** 32).toString(16).padStart(8, '0')}-node-${index}`, secret: 's'.repeat(64), app: 'app',
    token: 't'.repeat(64), deviceKey: `user@example.org|device-${index}`, boundDomain: null, registeredAt: 1, renewedAt: 1,
    lastPushAt: null, lastErrorAt: null, lastError: null, pushCount: 0, push2Key: null,
  };
}
const nodes = Array.from({ length: REGISTRATIONS }, (_, index) => registrationOf(index).node);

async function fill(store: Store): Promise<void> {
  for (let index = 0; index < REGISTRATIONS; index++) await store.insert(registrationOf(index));
}

/** Totals over `lookups` lookups, `perTurn` issued together and awaited before the next group. */
async function time(lookup: Lookup, lookups: number, perTurn: number, serverCpuS?: () => number | undefined): Promise<Figures> {
  const group: Array<Promise<Registration | undefined>> = [];
  const serverBefore = serverCpuS?.();
  const cpuBefore = process.cpuUsage();
  const started = performance.now();
  for (let done = 0; done < lookups; done += perTurn) {
    group.length = 0;
    for (let i = 0; i < perTurn; i++) group.push(lookup(nextNode()));
    for (const found of await Promise.all(group)) if (!found) throw new Error('a registration was not found');
  }
  const wallUs = (performance.now() - started) * 1000;
  const cpu = process.cpuUsage(cpuBefore);
  const serverAfter = serverCpuS?.();
  return {
    wallUs,
    cpuUs: cpu.user + cpu.system,
    serverCpuUs: serverBefore !== undefined && serverAfter !== undefined ? (serverAfter - serverBefore) * 1e6 : undefined,
  };
}

let picked = 0;
/** Every registration in turn, in an order that jumps around the B-tree. */
function nextNode(): string {
  picked = (picked + 617) % REGISTRATIONS;
  return nodes[picked];
}

function median(values: number[]): number {
  const sorted = values.toSorted((a, b) => a - b);
  const middle = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1 ? sorted[middle] : (sorted[middle - 1] + sorted[middle]) / 2;
}

/**
 * Before and after take turns in slices of a measurement, so both see the same machine (other
 * processes on a shared VM move single runs by ±10 %); the ratio is the median of each round's own.
 */
const SLICES = 10;

async function compare(name: string, before: Lookup, after: Lookup, lookups: number, serverCpuS?: () => number | undefined): Promise<void> {
  const measures: Array<[string, (f: Figures) => number | undefined]> = [['wall', (f) => f.wallUs], ['cpu', (f) => f.cpuUs]];
  if (serverCpuS) measures.push(['server cpu', (f) => f.serverCpuUs]);
  /** Per turn size and measure: each round's µs per lookup before and after. */
  const rows = new Map<number, Array<{ before: number[]; after: number[] }>>(PER_TURN.map((k) => [k, measures.map(() => ({ before: [], after: [] }))]));
  const slice = Math.ceil(lookups / SLICES);
  for (let round = 0; round <= rounds; round++) {
    for (const perTurn of PER_TURN) {
      const totals = { before: [0, 0, 0], after: [0, 0, 0] };
      for (let index = 0; index < SLICES; index++) {
        const order: Array<'before' | 'after'> = (round + index) % 2 === 0 ? ['before', 'after'] : ['after', 'before'];
        for (const variant of order) {
          const figures = await time(variant === 'before' ? before : after, slice, perTurn, serverCpuS);
          measures.forEach(([, pick], m) => { totals[variant][m] += pick(figures) ?? Number.NaN; });
        }
      }
      if (round === 0) continue;
      measures.forEach((_, m) => {
        rows.get(perTurn)![m].before.push(totals.before[m] / (slice * SLICES));
        rows.get(perTurn)![m].after.push(totals.after[m] / (slice * SLICES));
      });
    }
  }
  const fmt = (value: number) => (Number.isNaN(value) ? '—' : value.toFixed(2));
  console.log(`\n${name}: ${REGISTRATIONS} registrations, ${slice * SLICES} lookups per measurement, median of ${rounds} rounds, µs per lookup`);
  console.log(`per turn | ${measures.map(([m]) => `${m} before → after (after/before)`).join(' | ')}`);
  for (const perTurn of PER_TURN) {
    const cells = rows.get(perTurn)!.map(({ before: b, after: a }) =>
      `${fmt(median(b))} → ${fmt(median(a))} (${fmt(median(a.map((value, i) => value / b[i])))})`);
    console.log(`${String(perTurn).padStart(8)} | ${cells.join(' | ')}`);
  }
}

const noPending = new Map<string, PendingStats>();

/**
 * What one batch of k costs as SQL alone, without the batching around it: k statements (each its
 * own read transaction), k statements in one BEGIN … COMMIT, or one statement over a JSON array.
 */
function compareStatements(db: DatabaseSync, lookups: number): void {
  const byNode = db.prepare('SELECT * FROM registrations WHERE node = ?');
  const begin = db.prepare('BEGIN');
  const commit = db.prepare('COMMIT');
  const byNodes = db.prepare('SELECT * FROM registrations WHERE node IN (SELECT value FROM json_each(?))');
  const ways: Record<string, (keys: string[]) => void> = {
    'k statements': (keys) => {
      for (const key of keys) byNode.get(key);
    },
    'BEGIN, k statements, COMMIT': (keys) => {
      begin.run();
      for (const key of keys) byNode.get(key);
      commit.run();
    },
    'one json_each statement': (keys) => {
      byNodes.all(JSON.stringify(keys));
    },
  };
  const sizes = [1, 2, 5, 20, 100];
  const samples = new Map<string, number[]>();
  for (let round = 0; round <= rounds; round++) {
    for (const k of sizes) {
      const names = Object.keys(ways);
      if (round % 2 === 1) names.reverse();
      for (const name of names) {
        const started = performance.now();
        for (let done = 0; done < lookups; done += k) {
          const keys = Array.from({ length: k }, nextNode);
          ways[name](keys);
        }
        const us = ((performance.now() - started) * 1000) / lookups;
        if (round > 0) samples.set(`${name} ${k}`, [...(samples.get(`${name} ${k}`) ?? []), us]);
      }
    }
  }
  console.log(`\nSQLite, the SQL of one batch of k alone: median µs per lookup`);
  console.log(`${'k'.padStart(3)} | ${Object.keys(ways).join(' | ')}`);
  for (const k of sizes) console.log(`${String(k).padStart(3)} | ${Object.keys(ways).map((name) => median(samples.get(`${name} ${k}`)!).toFixed(2)).join(' | ')}`);
}

async function benchSqlite(): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'push-appserver-lookup-bench-'));
  const path = join(dir, 'push.db');
  const store = new SqliteStore(path);
  const direct = new DatabaseSync(path);
  try {
    await fill(store);
    const byNode = direct.prepare('SELECT * FROM registrations WHERE node = ?');
    // getByNode before batching: its own statement (its own read transaction) per lookup.
    const before: Lookup = async (node) => {
      const row = byNode.get(node) as RegistrationRow | undefined;
      return row ? withUnwritten(toRegistration(row), noPending.get(row.node)) : undefined;
    };
    await compare('SQLite', before, (node) => store.getByNode(node), Number(args.lookups ?? 20_000));
    compareStatements(direct, Number(args.lookups ?? 20_000));
  } finally {
    direct.close();
    await store.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

async function benchPostgres(): Promise<void> {
  let server: PostgresInstance | undefined;
  try {
    server = await startPostgres();
    const url = server.url(await server.createDatabase('lookup_bench'));
    const store = await PostgresStore.open(url);
    const sql = postgres(url, {
      max: DEFAULT_POOL_SIZE, onnotice: () => {}, fetch_types: false,
      types: { bigint: { to: 20, from: [20], serialize: (v: number) => String(v), parse: (v: string) => Number(v) } },
    });
    try {
      await fill(store);
      const before: Lookup = async (node) => {
        const [row] = await sql<RegistrationRow[]>`SELECT * FROM registrations WHERE node = ${node}`;
        return row ? withUnwritten(toRegistration(row), noPending.get(row.node)) : undefined;
      };
      const postmaster = Number(readFileSync(join(server.dir, 'data', 'postmaster.pid'), 'utf8').split('\n')[0]);
      await compare('PostgreSQL', before, (node) => store.getByNode(node), Number(args.lookups ?? 5000), () => processTreeCpuS(postmaster));
    } finally {
      await sql.end();
      await store.close();
    }
  } finally {
    await server?.stop();
  }
}

if (args.store === 'sqlite' || args.store === 'both') await benchSqlite();
if (args.store === 'postgres' || args.store === 'both') await benchPostgres();
