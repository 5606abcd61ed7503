/**
 * The other end of WalCheckpointer: a worker thread with its own connection to the SQLite file that
 * copies the write-ahead log back into the database when asked (a PASSIVE checkpoint never waits for,
 * nor blocks, the serving thread's readers and writers). The copy and its fsyncs take milliseconds,
 * which is why they happen here and not on the event loop that answers publishes.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { DatabaseSync } from 'node:sqlite';

export interface CheckpointDone {
  kind: 'checkpointed';
  /** Frames in the WAL, and how many of them are now in the database file (SQLite's own counts). */
  walFrames: number;
  checkpointed: number;
}

const port = parentPort;
if (!port) throw new Error('wal-checkpoint-worker.ts runs only as a worker thread');

const db = new DatabaseSync((workerData as { path: string }).path);
db.exec('PRAGMA synchronous = NORMAL; PRAGMA wal_autocheckpoint = 0;');
const checkpoint = db.prepare('PRAGMA wal_checkpoint(PASSIVE)');

port.on('message', (message: 'checkpoint' | 'close') => {
  if (message === 'close') {
    db.close();
    port.close();
    return;
  }
  const row = checkpoint.get() as { busy: number; log: number; checkpointed: number };
  const done: CheckpointDone = { kind: 'checkpointed', walFrames: row.log, checkpointed: row.checkpointed };
  port.postMessage(done);
});
