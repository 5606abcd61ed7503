/** Opens the store named by `storage.url`. */
import type { Logger } from '../log.ts';
import type { Store } from './types.ts';
import { SqliteStore, sqlitePathFromUrl } from './sqlite.ts';

export interface OpenStoreOptions {
  /** PostgreSQL connections in the pool (`storage.pool_size`). */
  poolSize?: number;
}

export function isPostgresUrl(url: string): boolean {
  return url.startsWith('postgres://') || url.startsWith('postgresql://');
}

export async function openStore(url: string, logger?: Logger, options: OpenStoreOptions = {}): Promise<Store> {
  if (url.startsWith('sqlite:')) {
    return new SqliteStore(sqlitePathFromUrl(url), {
      onCheckpointFallback: (error) => logger?.warn('WAL checkpoints are back on the serving thread (their worker thread failed)', { error }),
      onWriteFailure: (message, pending) => logger?.warn('the database refused a bookkeeping write; kept in memory and retried', { sqlite: message, unwritten: pending }),
      onWriteRecovered: (downMs) => logger?.info('the database accepts writes again', { down_ms: downMs }),
    });
  }
  if (isPostgresUrl(url)) {
    // Loaded only when asked for: an SQLite deployment never loads the driver.
    const { PostgresStore } = await import('./postgres.ts');
    return await PostgresStore.open(url, {
      poolSize: options.poolSize,
      onFlushError: (error) => logger?.warn('push bookkeeping not written yet (database unavailable); it is kept and written later', { error }),
    });
  }
  throw new Error(`storage url "${url.replace(/\/\/[^@]*@/, '//***@')}": use "sqlite:PATH" or "postgres://user:password@host:port/database"`);
}
