/** Opens the store named by `storage.url`. */
import type { Logger } from '../log.ts';
import type { Store } from './types.ts';
import { SqliteStore, sqlitePathFromUrl } from './sqlite.ts';

export async function openStore(url: string, logger?: Logger): Promise<Store> {
  if (url.startsWith('sqlite:')) {
    return new SqliteStore(sqlitePathFromUrl(url), {
      onCheckpointFallback: (error) => logger?.warn('WAL checkpoints are back on the serving thread (their worker thread failed)', { error }),
      onWriteFailure: (message, pending) => logger?.warn('the database refused a bookkeeping write; kept in memory and retried', { sqlite: message, unwritten: pending }),
      onWriteRecovered: (downMs) => logger?.info('the database accepts writes again', { down_ms: downMs }),
    });
  }
  throw new Error(`storage url "${url.replace(/\/\/[^@]*@/, '//***@')}": PostgreSQL is not supported yet; use "sqlite:PATH"`);
}
