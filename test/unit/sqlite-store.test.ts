/** The SQLite store passes the store contract, on a file (so reopening finds the data). */
import { join } from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import { SqliteStore } from '../../src/store/sqlite.ts';
import type { Store } from '../../src/store/types.ts';
import { testTempDir } from '../support/temp-dir.ts';
import { storeContract } from './store-contract.ts';

const dir = testTempDir('push-appserver-sqlite-contract-');
const paths = new WeakMap<Store, string>();
let opened = 0;

storeContract('sqlite', async () => {
  const path = join(dir, `store-${++opened}.db`);
  const store = new SqliteStore(path);
  paths.set(store, path);
  return store;
}, {
  reopen: async (closed) => new SqliteStore(paths.get(closed)!),
  openAs: async (open, lease) => new SqliteStore(paths.get(open)!, lease),
  // A second connection on the file, as the version that wrote the row would have.
  writeOldRetry: async (store, row) => {
    const db = new DatabaseSync(paths.get(store)!);
    try {
      db.prepare('INSERT INTO pending_retries (node, due_at, attempt, urgency, reason) VALUES (?, ?, ?, ?, ?)').run(row.node, row.dueAt, row.attempt, row.urgency, row.reason);
    } finally {
      db.close();
    }
  },
});
