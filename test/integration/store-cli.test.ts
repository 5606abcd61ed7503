/**
 * `push-appserver migrate` and `push-appserver copy-store` as operators run them (bin/push-appserver
 * in a child process) against SQLite files and a real PostgreSQL started by this file.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import postgres from 'postgres';
import { PostgresStore } from '../../src/store/postgres.ts';
import { SqliteStore } from '../../src/store/sqlite.ts';
import type { Registration, Store } from '../../src/store/types.ts';
import { postgresMissing, startPostgres, type PostgresInstance } from '../support/postgres.ts';
import { testTempDir } from '../support/temp-dir.ts';
import { registration } from '../unit/store-contract.ts';

const CLI = join(import.meta.dirname, '..', '..', 'bin', 'push-appserver');
const skip = postgresMissing();
let server: PostgresInstance;

before(async () => {
  if (!skip) server = await startPostgres();
});
after(async () => {
  await server?.stop();
});

/** Only PATH and HOME from the developer's environment: their PUSH_APPSERVER_* must not leak in. */
function cli(args: string[]): Promise<{ status: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(CLI, args, { env: { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: process.env.HOME ?? '/tmp' } });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (chunk) => { stdout += chunk; });
    child.stderr.on('data', (chunk) => { stderr += chunk; });
    child.once('error', reject);
    child.once('exit', (status) => resolve({ status, stdout, stderr }));
  });
}

function configFile(storageUrl: string): string {
  const file = join(testTempDir('push-appserver-store-cli-'), 'push-appserver.toml');
  writeFileSync(file, `[storage]\nurl = ${JSON.stringify(storageUrl)}\n[apps.apns]\nprovider = "log"\n`);
  return file;
}

async function allRegistrations(store: Store): Promise<Registration[]> {
  const all: Registration[] = [];
  let afterNode: string | undefined;
  for (;;) {
    const page = await store.list({ after: afterNode, limit: 500 });
    all.push(...page);
    if (page.length < 500) return all;
    afterNode = page[page.length - 1].node;
  }
}

function seeded(count: number): Registration[] {
  return Array.from({ length: count }, (_, i) => registration({
    node: `node-${String(i).padStart(5, '0')}`,
    secret: `${i}`.padStart(64, 'a'),
    app: i % 3 === 0 ? 'fcm' : 'apns',
    boundDomain: i % 2 === 0 ? 'example.org' : null,
    pushCount: i,
    lastPushAt: i % 5 === 0 ? null : 1_700_000_000_000 + i,
    lastError: i % 7 === 0 ? 'provider said 503' : null,
    lastErrorAt: i % 7 === 0 ? 1_700_000_001_000 : null,
    renewedAt: 1_700_000_000_000 + 3 * i,
    // Push 2.0 registrations carry their pinned JWT key: a copy without it would lock the client out.
    push2Key: i % 4 === 0 ? `BP2-key-${i}`.padEnd(87, 'x') : null,
  }));
}

test('migrate brings a new PostgreSQL database up to date, and a second run finds nothing to do', { skip }, async () => {
  const database = await server.createDatabase('cli_migrate');
  const file = configFile(server.url(database));
  const first = await cli(['migrate', '--config', file]);
  assert.equal(first.status, 0, first.stderr);
  const all = Array.from({ length: PostgresStore.migrationCount }, (_, i) => i + 1).join(', ');
  assert.ok(first.stdout.includes(`postgres schema is up to date (applied migrations ${all})`), first.stdout);
  const second = await cli(['migrate', '--config', file]);
  assert.equal(second.status, 0, second.stderr);
  assert.match(second.stdout, /postgres schema is up to date \(nothing to apply\)/);
  const sql = postgres(server.url(database), { max: 1 });
  const tables = await sql`SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY tablename`;
  await sql.end();
  assert.deepEqual(tables.map((t) => t.tablename), ['blocked_tokens', 'blocked_tokens_count', 'pending_retries', 'registrations', 'schema_migrations', 'throttle_windows']);
});

test('migrate on a SQLite file creates its schema and exits', async () => {
  const path = join(testTempDir('push-appserver-store-cli-'), 'push.db');
  const result = await cli(['migrate', '--config', configFile(`sqlite:${path}`)]);
  assert.equal(result.status, 0, result.stderr);
  assert.match(result.stdout, /sqlite schema is up to date/);
  const store = new SqliteStore(path);
  assert.equal(await store.count(), 0);
  await store.close();
});

test('migrate against a database that refuses us exits 1 with the url, password masked', { skip }, async () => {
  const file = configFile(`postgres://push:wrong-password@127.0.0.1:${server.port}/postgres`);
  const result = await cli(['migrate', '--config', file]);
  assert.equal(result.status, 1);
  assert.match(result.stderr, /postgres:\/\/push:\*\*\*@127\.0\.0\.1:\d+\/postgres/);
  assert.match(result.stderr, /password authentication failed/);
  assert.doesNotMatch(result.stderr, /wrong-password/);
});

test('copy-store moves every registration from SQLite to PostgreSQL and back, every field intact (node, secret, device key, domain, counts, times, last error, Push 2.0 key)', { skip }, async () => {
  const dir = testTempDir('push-appserver-store-cli-');
  const registrations = seeded(2345);
  const sqlite = new SqliteStore(join(dir, 'source.db'));
  for (const r of registrations) await sqlite.insert(r);
  await sqlite.close();
  const postgresUrl = server.url(await server.createDatabase('cli_copy'));

  const there = await cli(['copy-store', '--from', `sqlite:${join(dir, 'source.db')}`, '--to', postgresUrl]);
  assert.equal(there.status, 0, there.stderr);
  assert.match(there.stdout, /copied 2345 registration\(s\), 0 already there, 0 conflict\(s\)/);
  const pg = await PostgresStore.open(postgresUrl);
  assert.deepEqual(await allRegistrations(pg), registrations);
  await pg.close();

  const back = await cli(['copy-store', '--from', postgresUrl, '--to', `sqlite:${join(dir, 'back.db')}`]);
  assert.equal(back.status, 0, back.stderr);
  const returned = new SqliteStore(join(dir, 'back.db'));
  assert.deepEqual(await allRegistrations(returned), registrations);
  await returned.close();
});

/** A SQLite file of `count` seeded registrations, copied once by the CLI into a new PostgreSQL database. */
async function copiedOnce(count: number, database: string): Promise<{ sourcePath: string; args: string[]; postgresUrl: string }> {
  const sourcePath = join(testTempDir('push-appserver-store-cli-'), 'source.db');
  const source = new SqliteStore(sourcePath);
  for (const r of seeded(count)) await source.insert(r);
  await source.close();
  const postgresUrl = server.url(await server.createDatabase(database));
  const args = ['copy-store', '--from', `sqlite:${sourcePath}`, '--to', postgresUrl];
  assert.equal((await cli(args)).status, 0);
  return { sourcePath, args, postgresUrl };
}

test('copy-store run again copies only what is new, and reports a node the target uses for another device', { skip }, async () => {
  const { sourcePath, args, postgresUrl } = await copiedOnce(10, 'cli_again');
  const more = new SqliteStore(sourcePath);
  await more.insert(registration({ node: 'node-new', deviceKey: 'new|device' }));
  await more.insert(registration({ node: 'node-clash', deviceKey: 'clash|mine' }));
  await more.close();
  const target = await PostgresStore.open(postgresUrl);
  await target.insert(registration({ node: 'node-clash', deviceKey: 'clash|theirs', secret: 'b'.repeat(64) }));
  await target.close();

  const again = await cli(args);
  assert.equal(again.status, 1);
  assert.match(again.stdout, /copied 1 registration\(s\), 10 already there, 1 conflict\(s\)/);
  assert.match(again.stderr, /not copied: node-clash: the target has another registration with this node/);
  const check = await PostgresStore.open(postgresUrl);
  assert.equal((await check.getByNode('node-clash'))?.deviceKey, 'clash|theirs');
  assert.equal((await check.getByNode('node-new'))?.deviceKey, 'new|device');
  await check.close();
});

test('copy-store run again after the source kept serving brings a renewal and a new token into PostgreSQL, and says so', { skip }, async () => {
  const { sourcePath, args, postgresUrl } = await copiedOnce(3, 'cli_catch_up');
  const serving = new SqliteStore(sourcePath);
  await serving.renew('node-00001', 1_800_000_000_000);
  const [, , old] = seeded(3);
  const again = registration({ ...old, node: 'node-again', secret: 'c'.repeat(64), token: 'new-token', renewedAt: 1_800_000_000_000 });
  await serving.insert(again, old.node);
  const expected = [await serving.getByNode('node-00000'), await serving.getByNode('node-00001'), again];
  await serving.close();

  const caughtUp = await cli(args);
  assert.equal(caughtUp.status, 0, caughtUp.stderr);
  assert.match(caughtUp.stdout, /copied 0 registration\(s\), 1 already there, 0 conflict\(s\), 2 updated/);
  const pg = await PostgresStore.open(postgresUrl);
  assert.deepEqual(await allRegistrations(pg), expected);
  await pg.close();
});

test('copy-store without both urls, or with the same one twice, exits 2 and says why', async () => {
  const missing = await cli(['copy-store', '--from', 'sqlite:/tmp/x.db']);
  assert.equal(missing.status, 2);
  assert.match(missing.stderr, /copy-store needs --from URL and --to URL/);
  const same = await cli(['copy-store', '--from', 'sqlite:/tmp/x.db', '--to', 'sqlite:/tmp/x.db']);
  assert.equal(same.status, 2);
  assert.match(same.stderr, /name the same store/);
});
