/** Opens the store named by `storage.url`. */
import type { Store } from './types.ts';
import { SqliteStore, sqlitePathFromUrl } from './sqlite.ts';

export async function openStore(url: string): Promise<Store> {
  if (url.startsWith('sqlite:')) return new SqliteStore(sqlitePathFromUrl(url));
  throw new Error(`storage url "${url.replace(/\/\/[^@]*@/, '//***@')}": PostgreSQL is not supported yet; use "sqlite:PATH"`);
}
