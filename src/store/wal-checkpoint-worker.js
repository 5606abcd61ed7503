/**
 * The other end of WalCheckpointer (wal-checkpointer.ts): a worker thread with its own connection to
 * the SQLite file that copies the write-ahead log back into the database when asked. A PASSIVE
 * checkpoint neither waits for nor blocks the serving thread's readers and writers; the copy and its
 * fsyncs take milliseconds, which is why they happen here and not on the event loop.
 *
 * Plain JavaScript on purpose: a TypeScript entry point would load Node's type stripper into this
 * thread too, about 25 MB of resident memory for fifteen lines.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { DatabaseSync } from 'node:sqlite';

const port = parentPort;
if (!port) throw new Error('wal-checkpoint-worker.js runs only as a worker thread');

const db = new DatabaseSync(workerData.path);
db.exec('PRAGMA synchronous = NORMAL; PRAGMA wal_autocheckpoint = 0;');
const checkpoint = db.prepare('PRAGMA wal_checkpoint(PASSIVE)');

port.on('message', (message) => {
  if (message === 'close') {
    db.close();
    port.close();
    return;
  }
  const row = checkpoint.get();
  port.postMessage({ kind: 'checkpointed', walFrames: row.log, checkpointed: row.checkpointed });
});
