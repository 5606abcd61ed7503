/**
 * Keeps SQLite's WAL checkpoints off the event loop. By default the connection that commits the
 * transaction pushing the WAL past 1,000 pages copies those pages into the database file and fsyncs
 * it, right there in the middle of a commit: with pushes arriving at 2,000/s that was a 6–8 ms stall
 * every ~0.7 s (bench, issue 6), the largest single cause of slow publish answers. Here the serving
 * connection never checkpoints (wal_autocheckpoint = 0); writes are noted, and at most every
 * CHECKPOINT_EVERY_MS a worker thread with its own connection runs a PASSIVE checkpoint.
 *
 * The worker starts with the first write that needs it, so an idle server pays nothing for it. If it
 * cannot start or dies, the serving connection checkpoints for itself again, as SQLite does by default.
 */
import { Worker } from 'node:worker_threads';
import type { DatabaseSync } from 'node:sqlite';

/** What the worker (wal-checkpoint-worker.js) answers to each request. */
export interface CheckpointDone {
  kind: 'checkpointed';
  /** Frames in the WAL, and how many of them are now in the database file (SQLite's own counts). */
  walFrames: number;
  checkpointed: number;
}

const CHECKPOINT_EVERY_MS = 200;
/** SQLite's default, restored when the worker is gone. */
const AUTOCHECKPOINT_PAGES = 1000;

export interface WalCheckpointerOptions {
  /** Told once when the worker fails and checkpoints are back on the serving connection. */
  onFallback?: (error: Error) => void;
  everyMs?: number;
  /** The worker's module (tests start a broken one to see the fallback). */
  workerUrl?: URL;
}

export class WalCheckpointer {
  private readonly db: DatabaseSync;
  private readonly path: string;
  private readonly options: WalCheckpointerOptions;
  private worker: Worker | undefined;
  private timer: NodeJS.Timeout | undefined;
  private requested = false;
  private failed = false;
  private closed = false;
  private waiters: Array<{ resolve: (done: CheckpointDone) => void; reject: (error: Error) => void }> = [];
  /** Checkpoints the worker finished (for tests and diagnostics). */
  checkpoints = 0;

  constructor(db: DatabaseSync, path: string, options: WalCheckpointerOptions = {}) {
    this.db = db;
    this.path = path;
    this.options = options;
    db.exec('PRAGMA wal_autocheckpoint = 0');
  }

  get threadStarted(): boolean {
    return this.worker !== undefined;
  }

  get active(): boolean {
    return !this.failed && !this.closed;
  }

  /** After a committed write: a checkpoint follows within CHECKPOINT_EVERY_MS. */
  noteWrite(): void {
    if (this.timer || !this.active) return;
    this.timer = setTimeout(() => this.request(), this.options.everyMs ?? CHECKPOINT_EVERY_MS);
    this.timer.unref();
  }

  /** Resolves with the next checkpoint the worker finishes; rejects if the worker fails first (tests). */
  nextCheckpoint(): Promise<CheckpointDone> {
    return new Promise((resolve, reject) => this.waiters.push({ resolve, reject }));
  }

  private request(): void {
    this.timer = undefined;
    if (!this.active) return;
    if (this.requested) {
      // The last checkpoint is still running (a slow disk): ask again once it is done.
      this.noteWrite();
      return;
    }
    const worker = this.worker ?? this.start();
    if (!worker) return;
    this.requested = true;
    worker.postMessage('checkpoint');
  }

  private start(): Worker | undefined {
    try {
      const worker = new Worker(this.options.workerUrl ?? new URL('./wal-checkpoint-worker.js', import.meta.url), {
        workerData: { path: this.path },
        // A checkpoint needs almost no JavaScript heap; keep the thread's own footprint small.
        resourceLimits: { maxOldGenerationSizeMb: 16, maxYoungGenerationSizeMb: 2 },
        stdout: false,
        stderr: false,
      });
      worker.unref();
      worker.on('message', (done: CheckpointDone) => {
        this.requested = false;
        this.checkpoints += 1;
        for (const waiter of this.waiters.splice(0)) waiter.resolve(done);
      });
      worker.on('error', (error) => this.fallBack(error));
      worker.on('exit', (code) => {
        if (!this.closed) this.fallBack(new Error(`the WAL checkpoint thread exited with code ${code}`));
      });
      this.worker = worker;
      return worker;
    } catch (error) {
      this.fallBack(error as Error);
      return undefined;
    }
  }

  private fallBack(error: Error): void {
    if (this.failed || this.closed) return;
    this.failed = true;
    this.worker = undefined;
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    if (this.db.isOpen) this.db.exec(`PRAGMA wal_autocheckpoint = ${AUTOCHECKPOINT_PAGES}`);
    for (const waiter of this.waiters.splice(0)) waiter.reject(error);
    this.options.onFallback?.(error);
  }

  /** Stops the worker; the serving connection, closed last, checkpoints what is left. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    const worker = this.worker;
    this.worker = undefined;
    if (!worker) return;
    const exited = new Promise<void>((resolve) => worker.once('exit', () => resolve()));
    worker.postMessage('close');
    worker.ref();
    await exited;
  }
}
