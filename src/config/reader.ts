/**
 * Typed reads from one TOML table, with errors that name the file, the full key and what is wrong.
 * Values that came from environment variables arrive as strings and are coerced here, so
 * `PUSH_APPSERVER_HTTP__PORT=8080` works like `port = 8080`.
 */
import { readFileSync } from 'node:fs';

export class ConfigError extends Error {
  readonly file: string;
  readonly key: string;
  readonly problem: string;

  constructor(file: string, key: string, problem: string) {
    super(`${file}: ${key}: ${problem}`);
    this.name = 'ConfigError';
    this.file = file;
    this.key = key;
    this.problem = problem;
  }
}

export type Table = Record<string, unknown>;

export function isTable(value: unknown): value is Table {
  return typeof value === 'object' && value !== null && !Array.isArray(value) && !(value instanceof Date);
}

export class TableReader {
  readonly file: string;
  readonly path: string;
  readonly table: Table;
  private readonly seen = new Set<string>();

  constructor(file: string, path: string, table: Table) {
    this.file = file;
    this.path = path;
    this.table = table;
  }

  keyOf(key: string): string {
    return this.path ? `${this.path}.${key}` : key;
  }

  fail(key: string, problem: string): never {
    throw new ConfigError(this.file, this.keyOf(key), problem);
  }

  has(key: string): boolean {
    return this.table[key] !== undefined;
  }

  private raw(key: string): unknown {
    this.seen.add(key);
    return this.table[key];
  }

  string(key: string, fallback?: string): string {
    const value = this.raw(key);
    if (value === undefined) {
      if (fallback === undefined) this.fail(key, 'is required');
      return fallback;
    }
    if (typeof value !== 'string') this.fail(key, `must be a string, got ${describe(value)}`);
    return value;
  }

  optionalString(key: string): string | undefined {
    return this.has(key) ? this.string(key) : (this.raw(key) as undefined);
  }

  nonEmptyString(key: string, fallback?: string): string {
    const value = this.string(key, fallback);
    if (value.trim() === '') this.fail(key, 'must not be empty');
    return value;
  }

  integer(key: string, fallback: number | undefined, range: { min?: number; max?: number } = {}): number {
    let value = this.raw(key);
    if (value === undefined) {
      if (fallback === undefined) this.fail(key, 'is required');
      return fallback;
    }
    if (typeof value === 'string' && /^-?\d+$/.test(value.trim())) value = Number(value.trim());
    if (typeof value === 'bigint') value = Number(value);
    if (typeof value !== 'number' || !Number.isInteger(value)) this.fail(key, `must be a whole number, got ${describe(value)}`);
    if (range.min !== undefined && value < range.min) this.fail(key, `must be at least ${range.min}, got ${value}`);
    if (range.max !== undefined && value > range.max) this.fail(key, `must be at most ${range.max}, got ${value}`);
    return value;
  }

  boolean(key: string, fallback: boolean): boolean {
    const value = this.raw(key);
    if (value === undefined) return fallback;
    if (typeof value === 'boolean') return value;
    if (value === 'true' || value === '1') return true;
    if (value === 'false' || value === '0') return false;
    this.fail(key, `must be true or false, got ${describe(value)}`);
  }

  oneOf<T extends string>(key: string, choices: readonly T[], fallback?: T): T {
    const value = this.string(key, fallback);
    if (!(choices as readonly string[]).includes(value)) {
      this.fail(key, `must be one of ${choices.map((c) => `"${c}"`).join(', ')}, got "${value}"`);
    }
    return value as T;
  }

  /**
   * A list of strings; absent → undefined. A string (an environment variable) is split at commas,
   * so `PUSH_APPSERVER_APPS__X__ALLOWED_DOMAINS=a.org,b.org` works like `["a.org", "b.org"]`.
   */
  optionalStringList(key: string): string[] | undefined {
    const value = this.raw(key);
    if (value === undefined) return undefined;
    const items = typeof value === 'string' ? value.split(',').map((item) => item.trim()).filter((item) => item !== '') : value;
    if (!Array.isArray(items) || items.some((item) => typeof item !== 'string' || item.trim() === '')) {
      this.fail(key, `must be a list of non-empty strings such as ["example.org"], got ${describe(value)}`);
    }
    return items as string[];
  }

  /** A list of whole numbers in a range; absent → undefined. A string is split at commas. */
  optionalIntegerList(key: string, range: { min: number; max: number }): number[] | undefined {
    const value = this.raw(key);
    if (value === undefined) return undefined;
    const items = typeof value === 'string' ? value.split(',').map((item) => item.trim()).filter((item) => item !== '').map(Number) : value;
    if (!Array.isArray(items)) this.fail(key, `must be a list of whole numbers such as [443], got ${describe(value)}`);
    return items.map((item) => {
      const n = typeof item === 'bigint' ? Number(item) : item;
      if (typeof n !== 'number' || !Number.isInteger(n) || n < range.min || n > range.max) {
        this.fail(key, `must be a list of whole numbers from ${range.min} to ${range.max}, got ${describe(item)} in it`);
      }
      return n;
    });
  }

  /** A sub-table, read with its own reader; absent → an empty one. */
  section(key: string): TableReader {
    const value = this.raw(key);
    if (value === undefined) return new TableReader(this.file, this.keyOf(key), {});
    if (!isTable(value)) this.fail(key, `must be a table ([${this.keyOf(key)}]), got ${describe(value)}`);
    return new TableReader(this.file, this.keyOf(key), value);
  }

  /** The contents of a file named by `key` (key files, CA files); a missing file names the key. */
  fileContents(key: string, path: string): Buffer {
    try {
      return readFileSync(path);
    } catch (error) {
      const reason = (error as NodeJS.ErrnoException).code === 'ENOENT' ? 'file not found' : (error as Error).message;
      this.fail(key, `cannot read "${path}": ${reason}`);
    }
  }

  /** An `https://host[:port]` origin without a path (a push service endpoint override). */
  httpsOrigin(key: string, fallback: string, why: string): string {
    const value = this.nonEmptyString(key, fallback);
    let url: URL;
    try {
      url = new URL(value);
    } catch {
      this.fail(key, `must be an https origin such as "${fallback}", got "${value}"`);
    }
    if (url.protocol !== 'https:') this.fail(key, `must be an https origin (${why}), got "${value}"`);
    if (url.pathname !== '/' || url.search !== '' || url.hash !== '') this.fail(key, `must be an origin without a path, such as "https://host:port", got "${value}"`);
    return url.origin;
  }

  /** Marks a key as known without reading it (a value another reader consumes). */
  skip(key: string): void {
    this.seen.add(key);
  }

  /** Unknown keys are almost always typos; refusing them beats silently ignoring an operator's intent. */
  rejectUnknownKeys(): void {
    for (const key of Object.keys(this.table)) {
      if (!this.seen.has(key)) this.fail(key, 'is not a known setting here');
    }
  }
}

function describe(value: unknown): string {
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'an array';
  if (isTable(value)) return 'a table';
  if (typeof value === 'string') return JSON.stringify(value);
  return `${typeof value} ${String(value)}`;
}
