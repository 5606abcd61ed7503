/**
 * Child processes of the benchmark (push-appserver, the mock provider): started with their stderr
 * kept (last lines, for a failure message), stopped with SIGTERM then SIGKILL, and killed on any exit
 * of the benchmark, Ctrl-C included, so no process outlives a run.
 */
import { spawn, type ChildProcess, type SpawnOptions } from 'node:child_process';

const live = new Set<ChildProcess>();
let hooksInstalled = false;

function installExitHooks(): void {
  if (hooksInstalled) return;
  hooksInstalled = true;
  process.on('exit', () => {
    for (const child of live) child.kill('SIGKILL');
  });
  for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    process.on(signal, () => {
      for (const child of live) child.kill('SIGKILL');
      process.stderr.write(`\nbench: ${signal}, child processes killed\n`);
      process.exit(130);
    });
  }
}

export class Child {
  readonly name: string;
  readonly process: ChildProcess;
  private readonly tail: string[] = [];
  private exited: Promise<number | null>;
  exitCode: number | null | undefined;
  /** Lines of stderr that a level filter flags (WARN/ERROR log lines of push-appserver). */
  flaggedLines: string[] = [];

  constructor(name: string, command: string, args: string[], options: SpawnOptions & { flag?: RegExp; onStdoutLine?: (line: string) => void }) {
    installExitHooks();
    this.name = name;
    this.process = spawn(command, args, { ...options, stdio: ['ignore', 'pipe', 'pipe'] });
    live.add(this.process);
    this.exited = new Promise((resolve) => {
      this.process.once('exit', (code, signal) => {
        live.delete(this.process);
        this.exitCode = code ?? (signal ? null : code);
        resolve(code);
      });
      this.process.once('error', (error) => {
        live.delete(this.process);
        this.tail.push(`spawn failed: ${error.message}`);
        this.exitCode = null;
        resolve(null);
      });
    });
    const lines = (stream: NodeJS.ReadableStream, onLine: (line: string) => void) => {
      let partial = '';
      stream.setEncoding('utf8');
      stream.on('data', (chunk: string) => {
        const parts = (partial + chunk).split('\n');
        partial = parts.pop() ?? '';
        for (const line of parts) onLine(line);
      });
    };
    lines(this.process.stderr!, (line) => {
      this.tail.push(line);
      if (this.tail.length > 40) this.tail.shift();
      if (options.flag?.test(line) && this.flaggedLines.length < 100) this.flaggedLines.push(line);
    });
    lines(this.process.stdout!, options.onStdoutLine ?? (() => {}));
  }

  get pid(): number {
    return this.process.pid ?? -1;
  }

  get running(): boolean {
    return this.exitCode === undefined;
  }

  stderrTail(): string {
    return this.tail.join('\n');
  }

  /** SIGTERM (a graceful stop), SIGKILL after graceMs; resolves with the exit code. */
  async stop(graceMs = 5000): Promise<number | null> {
    if (this.running) {
      this.process.kill('SIGTERM');
      const timer = setTimeout(() => this.process.kill('SIGKILL'), graceMs);
      await this.exited;
      clearTimeout(timer);
    }
    return this.exitCode ?? null;
  }

  waitExit(): Promise<number | null> {
    return this.exited;
  }
}
