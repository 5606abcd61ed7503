/** The SQLite store passes the store contract, on a file (so reopening finds the data). */
import { join } from 'node:path';
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
});
