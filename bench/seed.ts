/**
 * The --scale run's store: a million registrations written straight into the SQLite file before the
 * server starts (one transaction; registering them over HTTP would take minutes and measure nothing
 * new). The schema comes from the store itself (SqliteStore runs the migrations), so the rows are
 * exactly what registrations over the API produce. Seeded node, secret and token are derived from the
 * index, so the load generator needs no table of a million entries to publish to them.
 */
import { createHash } from 'node:crypto';
import { DatabaseSync } from 'node:sqlite';
import { SqliteStore } from '../src/store/sqlite.ts';

function hex(kind: string, seed: string, index: number): string {
  return createHash('sha256').update(`${kind}:${seed}:${index}`).digest('hex');
}

/** A random-looking UUID-shaped node, as `newNode()` makes (so B-tree keys spread the same way). */
export function seededNode(seed: string, index: number): string {
  const h = hex('node', seed, index);
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-4${h.slice(13, 16)}-a${h.slice(17, 20)}-${h.slice(20, 32)}`;
}

export function seededSecret(seed: string, index: number): string {
  return hex('secret', seed, index);
}

export function seededToken(seed: string, index: number): string {
  return hex('token', seed, index);
}

export async function seedRegistrations(path: string, app: string, seed: string, count: number): Promise<number> {
  // Opening the store once creates the file and its schema.
  const store = new SqliteStore(path);
  await store.close();
  const started = performance.now();
  const db = new DatabaseSync(path);
  try {
    // Bulk load: a large page cache for this connection only (the server's own stays the default).
    db.exec('PRAGMA cache_size = -524288; PRAGMA synchronous = OFF;');
    const insert = db.prepare(`INSERT INTO registrations (node, secret, app, token, device_key, bound_domain, registered_at,
      renewed_at, last_push_at, last_error_at, last_error, push_count) VALUES (?, ?, ?, ?, ?, NULL, ?, ?, NULL, NULL, NULL, 0)`);
    const now = Date.now();
    db.exec('BEGIN');
    for (let i = 0; i < count; i++) {
      insert.run(seededNode(seed, i), seededSecret(seed, i), app, seededToken(seed, i), `|seeded-device-${i}`, now, now);
    }
    db.exec('COMMIT');
    db.exec('PRAGMA wal_checkpoint(TRUNCATE)');
  } finally {
    db.close();
  }
  return (performance.now() - started) / 1000;
}
