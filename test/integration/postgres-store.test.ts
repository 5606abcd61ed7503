/**
 * The PostgreSQL store against a real PostgreSQL started by this file: the store contract (every
 * store passes it), then what only a shared server has: migrations by instances starting at once,
 * several instances on one database, a lost connection and its return, TLS settings.
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import postgres from 'postgres';
import { PostgresStore, tlsOption } from '../../src/store/postgres.ts';
import type { NewRetry, Registration, Store, StoredRetry } from '../../src/store/types.ts';
import { postgresMissing, startPostgres, type PostgresInstance } from '../support/postgres.ts';
import { testPki } from '../support/tls.ts';
import { registration, storeContract } from '../unit/store-contract.ts';

const skip = postgresMissing();
let server: PostgresInstance;
const urls = new WeakMap<Store, string>();

before(async () => {
  if (!skip) server = await startPostgres();
});
after(async () => {
  await server?.stop();
});

async function freshStore(): Promise<PostgresStore> {
  const url = server.url(await server.createDatabase());
  const store = await PostgresStore.open(url, { poolSize: 4 });
  urls.set(store, url);
  return store;
}

storeContract('postgres', freshStore, {
  skip,
  reopen: async (closed) => PostgresStore.open(urls.get(closed)!),
  openAs: async (open, lease) => PostgresStore.open(urls.get(open)!, { poolSize: 2, ...lease }),
  writeOldRetry: async (store, row) => {
    const sql = postgres(urls.get(store)!, { max: 1, onnotice: () => {} });
    try {
      await sql`INSERT INTO pending_retries (node, due_at, attempt, urgency, reason) VALUES (${row.node}, ${row.dueAt}, ${row.attempt}, ${row.urgency}, ${row.reason})`;
    } finally {
      await sql.end();
    }
  },
});

async function until(condition: () => Promise<boolean>, what: string, timeoutMs = 15_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
}

async function succeeds(work: () => Promise<unknown>): Promise<boolean> {
  try {
    await work();
    return true;
  } catch {
    return false;
  }
}

test('instances starting at once on an empty database apply each migration exactly once', { skip }, async () => {
  const url = server.url(await server.createDatabase('migrate'));
  const stores = await Promise.all(Array.from({ length: 4 }, () => PostgresStore.open(url, { poolSize: 2 })));
  try {
    const sql = postgres(url, { max: 1, onnotice: () => {} });
    const rows = await sql`SELECT version FROM schema_migrations ORDER BY version`;
    await sql.end();
    assert.deepEqual(rows.map((row) => row.version), Array.from({ length: PostgresStore.migrationCount }, (_, i) => i + 1));
    assert.deepEqual(await stores[0].migrate(), []);
    await stores[0].insert(registration({ node: 'n1' }));
    assert.equal((await stores[3].getByNode('n1'))?.node, 'n1');
  } finally {
    await Promise.all(stores.map((store) => store.close()));
  }
});

test('two instances on one database see each other\'s registrations and bookkeeping', { skip }, async () => {
  const url = server.url(await server.createDatabase('shared'));
  const [one, two] = await Promise.all([PostgresStore.open(url), PostgresStore.open(url)]);
  try {
    await one.insert(registration({ node: 'n1' }));
    assert.equal((await two.getByNode('n1'))?.token, 'token-n1');
    one.recordDelivery('n1', 1000);
    two.recordDelivery('n1', 2000);
    await one.flush();
    await two.flush();
    const read = await one.getByNode('n1');
    assert.equal(read?.pushCount, 2);
    assert.equal(read?.lastPushAt, 2000);
    await two.blockToken('app', 'dead', Date.now() + 60_000);
    assert.equal(await one.isTokenBlocked('app', 'dead', Date.now()), true);
  } finally {
    await one.close();
    await two.close();
  }
});

function savedRetry(key: string, dueAt: number): NewRetry {
  return {
    key, dialect: 'xep0357', app: 'app', reason: 'provider said 503', firstAttemptAt: 900, dueAt, attempt: 1,
    request: { dialect: 'xep0357', node: key, secret: null, from: null, options: {} },
    notification: { summary: { messageCount: 1 }, urgency: 'high', firstAttemptAt: 900 },
  };
}

test('two instances leasing due retries at once never lease the same one (issue 13: SKIP LOCKED)', { skip }, async () => {
  const url = server.url(await server.createDatabase('retries'));
  const [one, two] = await Promise.all([PostgresStore.open(url), PostgresStore.open(url)]);
  try {
    for (let i = 0; i < 200; i++) await (i % 2 === 0 ? one : two).saveRetry(savedRetry(`n${i}`, 1000 + i));
    const leased: string[] = [];
    // Two workers per instance, small batches, until nothing is due. The bound stops a broken lease
    // (rows due again at once) from looping for ever: the assertions below then say what went wrong.
    await Promise.all([one, two, one, two].map(async (store) => {
      while (leased.length <= 200) {
        const batch = await store.leaseDueRetries(5000, 7, 60_000);
        if (batch.length === 0) return;
        leased.push(...batch.map((r) => r.key));
      }
    }));
    assert.equal(leased.length, 200, 'leases in all: every saved retry once, none again while its lease runs');
    assert.equal(new Set(leased).size, 200, 'distinct keys leased');
    assert.equal(await two.countRetries(), 200, 'leased rows stay until finished');
  } finally {
    await one.close();
    await two.close();
  }
});

test('a lease skips rows another transaction holds locked instead of waiting for it', { skip }, async () => {
  const store = await freshStore();
  const sql = postgres(urls.get(store)!, { max: 1, onnotice: () => {} });
  let release!: () => void;
  const released = new Promise<void>((resolve) => { release = resolve; });
  let locked!: () => void;
  const isLocked = new Promise<void>((resolve) => { locked = resolve; });
  try {
    for (let i = 0; i < 5; i++) await store.saveRetry(savedRetry(`n${i}`, 1000 + i));
    // Another instance in the middle of its lease of n0 and n1.
    const holder = sql.begin(async (tx) => {
      await tx`SELECT node FROM pending_retries WHERE node IN ('n0', 'n1') FOR UPDATE`;
      locked();
      await released;
    });
    await Promise.race([isLocked, holder]);
    let timer: NodeJS.Timeout | undefined;
    const leasing = store.leaseDueRetries(5000, 10, 60_000);
    const first = await Promise.race([leasing, new Promise<'waited'>((resolve) => { timer = setTimeout(() => resolve('waited'), 5000); })]);
    clearTimeout(timer);
    release();
    await holder;
    await leasing;
    assert.notEqual(first, 'waited', 'the lease waited for the locked rows');
    assert.deepEqual((first as StoredRetry[]).map((r) => r.key), ['n2', 'n3', 'n4']);
    assert.deepEqual((await store.leaseDueRetries(5000, 10, 60_000)).map((r) => r.key), ['n0', 'n1']);
  } finally {
    release();
    await sql.end();
    await store.close();
  }
});

test('a retry the database refuses shows the store degraded with PostgreSQL\'s message until a write succeeds, as SQLite does', { skip }, async () => {
  const store = await freshStore();
  const sql = postgres(urls.get(store)!, { max: 1 });
  try {
    const retry = (key: string, reason: string) => ({
      key, dialect: 'xep0357', app: 'app', reason, firstAttemptAt: 1000, dueAt: 2000, attempt: 1,
      request: { dialect: 'xep0357', node: key, secret: null, from: null, options: {} },
      notification: { summary: { messageCount: 1 }, urgency: 'normal' as const, firstAttemptAt: 1000 },
    });
    await sql`ALTER TABLE pending_retries ADD CONSTRAINT refuse_some CHECK (reason <> 'refuse me')`;
    assert.deepEqual(store.health(), { state: 'ok' });
    await assert.rejects(store.saveRetry(retry('n1', 'refuse me')), /refuse_some/);
    const degraded = store.health();
    assert.equal(degraded.state, 'degraded');
    assert.match(degraded.detail ?? '', /^writes \(bookkeeping or retries\) failing since \S+: .*refuse_some/);
    await store.saveRetry(retry('n2', 'provider said 503'));
    assert.deepEqual(store.health(), { state: 'ok' });
  } finally {
    await sql.end();
    await store.close();
  }
});

test('a lost connection fails operations and ping, and the store serves again once the database is back, without reopening', { skip }, async () => {
  const store = await freshStore();
  try {
    await store.insert(registration({ node: 'n1' }));
    await server.halt();
    await assert.rejects(store.ping());
    await assert.rejects(store.getByNode('n1'));
    // Lookups of one turn share a query: each of them fails with the error a lone lookup gets.
    const [lone] = await Promise.allSettled([store.getByNode('n1')]);
    const batch = await Promise.allSettled(['n1', 'n2', 'n1'].map((node) => store.getByNode(node)));
    assert.equal(lone.status, 'rejected');
    const code = (error: unknown) => (error as { code?: string }).code;
    for (const settled of batch) {
      assert.equal(settled.status, 'rejected');
      assert.equal(code((settled as PromiseRejectedResult).reason), code(lone.reason));
    }
    // Bookkeeping recorded meanwhile is kept and written once the database is back.
    store.recordDelivery('n1', 4242);
    await store.flush();
    await server.resume();
    await until(() => succeeds(() => store.ping()), 'ping after the database came back');
    assert.equal((await store.getByNode('n1'))?.pushCount, 1);
    assert.deepEqual((await Promise.all(['n1', 'n2', 'n1'].map((node) => store.getByNode(node)))).map((read) => read?.node), ['n1', undefined, 'n1']);
    await until(async () => {
      await store.flush();
      const sql = postgres(urls.get(store)!, { max: 1 });
      const [row] = await sql`SELECT push_count FROM registrations WHERE node = 'n1'`;
      await sql.end();
      return Number(row.push_count) === 1;
    }, 'bookkeeping written after the outage');
  } finally {
    await store.close();
  }
});

test('a node PostgreSQL cannot hold (a NUL) fails its own lookup, not the other lookups of its turn', { skip }, async () => {
  const store = await freshStore();
  try {
    await store.insert(registration({ node: 'n1' }));
    const settled = await Promise.allSettled(['n1', 'bad\u0000node', 'n2'].map((node) => store.getByNode(node)));
    assert.deepEqual(settled.map((outcome) => outcome.status), ['fulfilled', 'rejected', 'fulfilled']);
    assert.equal((settled[0] as PromiseFulfilledResult<Registration | undefined>).value?.node, 'n1');
  } finally {
    await store.close();
  }
});

test('connections killed on the server side are replaced by the driver on the next query', { skip }, async () => {
  const store = await freshStore();
  try {
    await store.insert(registration({ node: 'n1' }));
    const database = new URL(urls.get(store)!).pathname.slice(1);
    assert.ok((await server.terminateConnections(database)) > 0);
    await until(() => succeeds(() => store.getByNode('n1')), 'a lookup after the connections were killed');
    assert.equal((await store.getByNode('n1'))?.node, 'n1');
  } finally {
    await store.close();
  }
});

test('a database that cannot be reached is refused at open with the url, password masked', { skip }, async () => {
  const url = `postgres://push:very-secret@127.0.0.1:${server.port}/no_such_database`;
  await assert.rejects(PostgresStore.open(url), (error: Error) => {
    assert.match(error.message, /postgres:\/\/push:\*\*\*@127\.0\.0\.1/);
    assert.doesNotMatch(error.message, /very-secret/);
    return true;
  });
});

test('postgresql:// urls are accepted like postgres://', { skip }, async () => {
  const url = server.url(await server.createDatabase('scheme')).replace(/^postgres:/, 'postgresql:');
  const store = await PostgresStore.open(url);
  await store.ping();
  await store.close();
});

test('sslmode maps to the driver\'s TLS setting as libpq reads it, and an unknown mode is refused', () => {
  const url = 'postgres://u@h/db';
  assert.equal(tlsOption(undefined, undefined, url), false);
  assert.equal(tlsOption('disable', undefined, url), false);
  assert.equal(tlsOption('prefer', undefined, url), 'prefer');
  assert.equal(tlsOption('require', undefined, url), 'require');
  const verifyFull = tlsOption('verify-full', undefined, url);
  assert.equal(typeof verifyFull === 'object' && verifyFull.rejectUnauthorized, true);
  const verifyCa = tlsOption('verify-ca', undefined, url);
  assert.equal(typeof verifyCa === 'object' && typeof verifyCa.checkServerIdentity, 'function');
  assert.throws(() => tlsOption('bogus', undefined, url), /sslmode must be one of/);
});

test('sslmode=verify-full with PGSSLROOTCERT connects over TLS to a server whose certificate that CA signed, and not without the CA', { skip }, async () => {
  const pki = testPki();
  const tlsServer = await startPostgres({ tls: { cert: pki.serverCert, key: pki.serverKey } });
  try {
    const database = await tlsServer.createDatabase('tls');
    const url = `${tlsServer.url(database).replace('127.0.0.1', 'localhost')}?sslmode=verify-full`;
    const store = await PostgresStore.open(url, { env: { PGSSLROOTCERT: pki.caFile } });
    try {
      await store.insert(registration({ node: 'n1' }));
      const sql = postgres(tlsServer.url(database), { max: 1 });
      const [row] = await sql`SELECT count(*) FILTER (WHERE ssl) AS encrypted FROM pg_stat_ssl JOIN pg_stat_activity USING (pid) WHERE application_name = 'push-appserver'`;
      await sql.end();
      assert.ok(Number(row.encrypted) > 0);
    } finally {
      await store.close();
    }
    await assert.rejects(PostgresStore.open(url, { env: {} }), /certificate/i);
  } finally {
    await tlsServer.stop();
  }
});
