/**
 * A small structured logger: one event per line on stderr, either text
 * (`time LEVEL [scope] message key=value`, what operators grep) or JSON (one object per line with
 * `time`, `level`, `logger`, `msg` and the fields, what log shippers parse).
 *
 * Whatever a caller passes, a line never carries a secret or a full device token: fields named like
 * secrets are masked, token fields shortened, `token=`/`secret=` query parameters in URLs masked.
 * An error's stack is written only when the level is `debug`. A warning or error repeated many
 * times a second (a push service down, a flood of bad publishes) is printed a few times and then
 * summarised once per second with the number left out.
 */
export type LogLevel = 'debug' | 'info' | 'warn' | 'error';
export type LogFormat = 'text' | 'json';

const levelRank: Record<LogLevel, number> = { debug: 10, info: 20, warn: 30, error: 40 };

export interface Logger {
  debug(message: string, fields?: Record<string, unknown>): void;
  info(message: string, fields?: Record<string, unknown>): void;
  warn(message: string, fields?: Record<string, unknown>): void;
  error(message: string, fields?: Record<string, unknown>): void;
  child(scope: string): Logger;
}

export interface LogSink {
  write(line: string): void;
}

export interface LoggerOptions {
  level?: LogLevel;
  format?: LogFormat;
  scope?: string;
  sink?: LogSink;
  /** The clock (tests). */
  now?: () => number;
  /** Lines of one kind printed per second before the rest are summarised (default 5). */
  repeatBurst?: number;
}

/** Field names whose values are never written. */
const SECRET_FIELD = /(^|_)(secret|password|passphrase|authorization|jwt|private_key|admin_token|bearer)$/i;
/** Field names holding a device token (or a WebPush subscription): written shortened. */
const TOKEN_FIELD = /(^|_)token$/i;
/**
 * A `node` is ours (a UUID) or the client's choice, but the stateless dialects have no node and
 * log the device token as one (or the target key `app\0token`): long node values are shortened
 * like tokens, part by part.
 */
const NODE_FIELD = /^node$/i;
const LONGEST_NODE_SHOWN = 40;
const SECRET_QUERY = /([?&](?:token|secret|password)=)[^&#\s]*/gi;
/** Tokens up to this length are test or dry-run values (the log provider shows them whole too). */
const SHORT_TOKEN = 16;
const REPEAT_WINDOW_MS = 1000;
const MAX_TRACKED_KINDS = 1000;

export function shortenToken(token: string): string {
  if (token.length <= SHORT_TOKEN || token.includes('…')) return token;
  return `${token.slice(0, 8)}…${token.slice(-4)}`;
}

/** The value as it may appear in a log line, under the field name `key`. */
function redact(key: string, value: unknown, depth = 0): unknown {
  if (value === undefined || value === null) return value;
  if (SECRET_FIELD.test(key)) return value === '' ? '' : '********';
  if (typeof value === 'string') {
    if (TOKEN_FIELD.test(key)) return shortenToken(value);
    if (NODE_FIELD.test(key) && (value.length > LONGEST_NODE_SHOWN || value.includes('\u0000'))) return value.split('\u0000').map(shortenToken).join('/');
    return value.includes('=') ? value.replace(SECRET_QUERY, '$1********') : value;
  }
  if (value instanceof Error) return value;
  if (typeof value === 'object' && depth < 4) {
    if (Array.isArray(value)) return value.map((item) => redact(key, item, depth + 1));
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, redact(k, v, depth + 1)]));
  }
  return value;
}

function formatTextValue(value: unknown): string {
  if (typeof value === 'string') return /[\s"=]/.test(value) || value === '' ? JSON.stringify(value) : value;
  if (typeof value === 'object' && value !== null) return JSON.stringify(value);
  return String(value);
}

interface RepeatState {
  windowStart: number;
  printed: number;
  suppressed: number;
  timer: NodeJS.Timeout | undefined;
}

/** Shared by a logger and its children: one budget per kind of line (scope, level, message). */
class RepeatLimiter {
  private readonly kinds = new Map<string, RepeatState>();
  private readonly burst: number;
  private readonly now: () => number;

  constructor(burst: number, now: () => number) {
    this.burst = burst;
    this.now = now;
  }

  /** True when this line is to be printed; `summarise` is called later with the count left out. */
  admit(kind: string, summarise: (suppressed: number) => void): boolean {
    const now = this.now();
    let state = this.kinds.get(kind);
    if (state && now - state.windowStart >= REPEAT_WINDOW_MS) {
      this.close(kind, state, summarise);
      state = undefined;
    }
    if (!state) {
      if (this.kinds.size >= MAX_TRACKED_KINDS) this.sweep(now);
      state = { windowStart: now, printed: 0, suppressed: 0, timer: undefined };
      this.kinds.set(kind, state);
    }
    if (state.printed < this.burst) {
      state.printed += 1;
      return true;
    }
    state.suppressed += 1;
    if (!state.timer) {
      const open = state;
      open.timer = setTimeout(() => {
        open.timer = undefined;
        if (this.kinds.get(kind) === open) this.close(kind, open, summarise);
      }, Math.max(1, open.windowStart + REPEAT_WINDOW_MS - now));
      open.timer.unref();
    }
    return false;
  }

  private close(kind: string, state: RepeatState, summarise: (suppressed: number) => void): void {
    clearTimeout(state.timer);
    this.kinds.delete(kind);
    if (state.suppressed > 0) summarise(state.suppressed);
  }

  /** Forgets quiet kinds (those with nothing left out), so memory stays bounded. */
  private sweep(now: number): void {
    for (const [kind, state] of this.kinds) {
      if (state.suppressed === 0 && now - state.windowStart >= REPEAT_WINDOW_MS) this.kinds.delete(kind);
    }
    if (this.kinds.size >= MAX_TRACKED_KINDS) {
      for (const [kind, state] of this.kinds) {
        if (state.suppressed === 0) this.kinds.delete(kind);
      }
    }
  }
}

interface Shared {
  minimum: number;
  format: LogFormat;
  sink: LogSink;
  now: () => number;
  limiter: RepeatLimiter;
}

function buildLogger(shared: Shared, scope: string): Logger {
  const withStack = shared.minimum <= levelRank.debug;

  const write = (level: LogLevel, message: string, fields: Record<string, unknown> | undefined): void => {
    const time = new Date(shared.now()).toISOString();
    if (shared.format === 'json') {
      const entry: Record<string, unknown> = { time, level, logger: scope, msg: message };
      if (fields) {
        for (const [key, raw] of Object.entries(fields)) {
          if (raw === undefined) continue;
          const name = key in entry ? `field_${key}` : key;
          const value = redact(key, raw);
          if (value instanceof Error) {
            entry[name] = value.message;
            if (withStack && value.stack) entry[`${name}_stack`] = value.stack;
          } else {
            entry[name] = value;
          }
        }
      }
      shared.sink.write(JSON.stringify(entry) + '\n');
      return;
    }
    let line = `${time} ${level.toUpperCase().padEnd(5)} [${scope}] ${message}`;
    let stacks = '';
    if (fields) {
      for (const [key, raw] of Object.entries(fields)) {
        if (raw === undefined) continue;
        const value = redact(key, raw);
        if (value instanceof Error) {
          line += ` ${key}=${JSON.stringify(value.message)}`;
          if (withStack && value.stack) stacks += `\n${value.stack}`;
        } else {
          line += ` ${key}=${formatTextValue(value)}`;
        }
      }
    }
    shared.sink.write(line + stacks + '\n');
  };

  const emit = (level: LogLevel, message: string, fields?: Record<string, unknown>): void => {
    if (levelRank[level] < shared.minimum) return;
    if (level === 'warn' || level === 'error') {
      const admitted = shared.limiter.admit(`${scope}\u0000${level}\u0000${message}`, (suppressed) => {
        write(level, `${message} (repeated ${suppressed} more times in ${REPEAT_WINDOW_MS / 1000} s, not printed)`, { suppressed });
      });
      if (!admitted) return;
    }
    write(level, message, fields);
  };

  return {
    debug: (m, f) => emit('debug', m, f),
    info: (m, f) => emit('info', m, f),
    warn: (m, f) => emit('warn', m, f),
    error: (m, f) => emit('error', m, f),
    child: (child) => buildLogger(shared, `${scope}:${child}`),
  };
}

export function createLogger(options: LoggerOptions = {}): Logger {
  const now = options.now ?? Date.now;
  const shared: Shared = {
    minimum: levelRank[options.level ?? 'info'],
    format: options.format ?? 'text',
    sink: options.sink ?? { write: (line) => process.stderr.write(line) },
    now,
    limiter: new RepeatLimiter(options.repeatBurst ?? 5, now),
  };
  return buildLogger(shared, options.scope ?? 'push-appserver');
}

/** For tests and tools that must stay quiet. */
export const silentLogger: Logger = {
  debug() {},
  info() {},
  warn() {},
  error() {},
  child: () => silentLogger,
};
