/**
 * Loads the configuration: a TOML file (or the built-in defaults), then environment overrides.
 *
 * Environment: `PUSH_APPSERVER_<SECTION>__<KEY>` sets one key; `__` separates table levels and names
 * are lower-cased, so `PUSH_APPSERVER_XMPP__COMPONENT_SECRET` sets `xmpp.component_secret` and
 * `PUSH_APPSERVER_APPS__APNS__TOPIC` sets `apps.apns.topic`.
 */
import { existsSync, readFileSync } from 'node:fs';
import { parse as parseToml, TomlError } from 'smol-toml';
import { ConfigError, isTable, type Table } from './reader.ts';
import { defaultDocument, readConfig, type Config } from './schema.ts';

export const ENV_PREFIX = 'PUSH_APPSERVER_';
export const DEFAULT_CONFIG_PATH = 'config/push-appserver.toml';

export function parseDocument(text: string, file: string): Table {
  try {
    return parseToml(text) as Table;
  } catch (error) {
    if (error instanceof TomlError) {
      throw new ConfigError(file, `line ${error.line}, column ${error.column}`, `not valid TOML: ${error.message.split('\n')[0]}`);
    }
    throw error;
  }
}

export function readDocument(file: string): Table {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (error) {
    const reason = (error as NodeJS.ErrnoException).code === 'ENOENT' ? 'file not found' : (error as Error).message;
    throw new ConfigError(file, '(file)', `cannot read the configuration: ${reason}`);
  }
  return parseDocument(text, file);
}

/** Applies `PUSH_APPSERVER_*` variables onto the document; returns the keys it set, for logging. */
export function applyEnvironment(document: Table, env: NodeJS.ProcessEnv, source: string): string[] {
  const applied: string[] = [];
  for (const [name, value] of Object.entries(env)) {
    if (!name.startsWith(ENV_PREFIX) || value === undefined) continue;
    const path = name.slice(ENV_PREFIX.length).split('__').map((part) => part.toLowerCase());
    if (path.some((part) => part === '')) {
      throw new ConfigError(`${source} (environment)`, name, 'is not of the form PUSH_APPSERVER_SECTION__KEY');
    }
    let table = document;
    for (const part of path.slice(0, -1)) {
      const next = table[part];
      if (next === undefined) table[part] = {};
      else if (!isTable(next)) throw new ConfigError(`${source} (environment)`, name, `${part} is not a table in the configuration`);
      table = table[part] as Table;
    }
    table[path[path.length - 1]] = value;
    applied.push(path.join('.'));
  }
  return applied;
}

export interface LoadedConfig {
  config: Config;
  environmentKeys: string[];
}

/**
 * With an explicit path the file must exist; without one, config/push-appserver.toml is used when
 * present and the built-in defaults otherwise.
 */
export function loadConfig(path: string | undefined, env: NodeJS.ProcessEnv = process.env): LoadedConfig {
  let document: Table;
  let source: string;
  if (path !== undefined) {
    document = readDocument(path);
    source = path;
  } else if (existsSync(DEFAULT_CONFIG_PATH)) {
    document = readDocument(DEFAULT_CONFIG_PATH);
    source = DEFAULT_CONFIG_PATH;
  } else {
    document = defaultDocument();
    source = 'built-in defaults';
  }
  const environmentKeys = applyEnvironment(document, env, source);
  return { config: readConfig(document, source), environmentKeys };
}
