import assert from 'node:assert/strict';
import { test } from 'node:test';
import { applyEnvironment, parseDocument } from '../../src/config/load.ts';
import { ConfigError } from '../../src/config/reader.ts';
import { defaultDocument, readConfig } from '../../src/config/schema.ts';
import { parseAppSettings } from '../../src/app.ts';

function configError(toml: string): ConfigError {
  try {
    parseAppSettings(readConfig(parseDocument(toml, 'ops.toml'), 'ops.toml'));
  } catch (error) {
    assert.ok(error instanceof ConfigError, String(error));
    return error;
  }
  assert.fail('expected a configuration error');
}

test('the built-in defaults are the documented ones', () => {
  const config = readConfig(defaultDocument(), 'built-in defaults');
  assert.equal(config.storage.url, 'sqlite:data/push.db');
  assert.equal(config.http.host, '127.0.0.1');
  assert.equal(config.http.port, 5280);
  assert.equal(config.http.debug, false);
  assert.equal(config.xmpp.componentJid, 'push.localhost');
  assert.equal(config.xmpp.serverHost, '127.0.0.1');
  assert.equal(config.xmpp.serverPort, 5347);
  assert.deepEqual([...config.apps.values()].map((app) => [app.name, app.provider]), [['apns', 'log'], ['fcm', 'log']]);
});

test('a wrongly typed value names the file, the key and the problem', () => {
  const error = configError('[http]\nport = "eighty"\n[apps.a]\nprovider = "log"\n');
  assert.equal(error.file, 'ops.toml');
  assert.equal(error.key, 'http.port');
  assert.match(error.message, /whole number/);
});

test('an out-of-range port is refused', () => {
  assert.equal(configError('[xmpp]\nserver_port = 70000\n[apps.a]\nprovider = "log"\n').key, 'xmpp.server_port');
});

test('a misspelt key is refused rather than silently ignored', () => {
  const error = configError('[xmpp]\ncomponent_secert = "x"\n[apps.a]\nprovider = "log"\n');
  assert.equal(error.key, 'xmpp.component_secert');
});

test('an unknown provider names the app and lists the known ones', () => {
  const error = configError('[apps.monal-prod]\nprovider = "carrier-pigeon"\n');
  assert.equal(error.key, 'apps.monal-prod.provider');
  assert.match(error.message, /log/);
});

test('a config without apps is refused', () => {
  assert.equal(configError('[http]\nport = 8080\n').key, 'apps');
});

test('TOML syntax errors name the line', () => {
  const error = configError('[http\nport = 1');
  assert.match(error.key, /line 1/);
});

test('an unsupported storage url is refused with an example', () => {
  const error = configError('[storage]\nurl = "mysql://x"\n[apps.a]\nprovider = "log"\n');
  assert.equal(error.key, 'storage.url');
});

test('environment variables override single keys, with string values coerced', () => {
  const document = parseDocument('[xmpp]\ncomponent_secret = "from-file"\n[apps.apns]\nprovider = "log"\n', 'ops.toml');
  const keys = applyEnvironment(document, {
    PUSH_APPSERVER_XMPP__COMPONENT_SECRET: 'from-env',
    PUSH_APPSERVER_HTTP__PORT: '8080',
    PUSH_APPSERVER_HTTP__DEBUG: 'true',
    PUSH_APPSERVER_HTTP__ADMIN_TOKEN: 'a'.repeat(32),
    UNRELATED: 'x',
  }, 'ops.toml');
  const config = readConfig(document, 'ops.toml');
  assert.deepEqual(keys.sort(), ['http.admin_token', 'http.debug', 'http.port', 'xmpp.component_secret']);
  assert.equal(config.xmpp.componentSecret, 'from-env');
  assert.equal(config.http.port, 8080);
  assert.equal(config.http.debug, true);
});

test('metrics are on and open by default, logs are text', () => {
  const config = readConfig(defaultDocument(), 'built-in defaults');
  assert.deepEqual(config.metrics, { enabled: true, token: undefined, registrationsRecountS: 60 });
  assert.equal(config.log.format, 'text');
});

test('metrics.enabled, metrics.token and log.format are read, and a wrong log format names the key', () => {
  const config = readConfig(parseDocument('[metrics]\nenabled = false\ntoken = "scrape-token"\nregistrations_recount_s = 5\n[log]\nformat = "json"\n[apps.a]\nprovider = "log"\n', 'ops.toml'), 'ops.toml');
  assert.deepEqual(config.metrics, { enabled: false, token: 'scrape-token', registrationsRecountS: 5 });
  assert.equal(configError('[metrics]\nregistrations_recount_s = 0\n[apps.a]\nprovider = "log"\n').key, 'metrics.registrations_recount_s');
  assert.equal(config.log.format, 'json');
  assert.equal(configError('[log]\nformat = "xml"\n[apps.a]\nprovider = "log"\n').key, 'log.format');
  assert.equal(configError('[metrics]\ntoken = " "\n[apps.a]\nprovider = "log"\n').key, 'metrics.token');
});

test('http.debug without an admin token, a short one or an empty one is a configuration error', () => {
  assert.equal(configError('[http]\ndebug = true\n[apps.a]\nprovider = "log"\n').key, 'http.debug');
  assert.equal(configError('[http]\ndebug = true\nadmin_token = "short"\n[apps.a]\nprovider = "log"\n').key, 'http.admin_token');
  assert.equal(configError('[http]\nadmin_token = ""\n[apps.a]\nprovider = "log"\n').key, 'http.admin_token');
});

test('an admin token shorter than 32 characters is a configuration error without http.debug too: it opens the admin page', () => {
  assert.equal(configError('[http]\nadmin_token = "31-characters-is-one-too-short!"\n[apps.a]\nprovider = "log"\n').key, 'http.admin_token');
  const token = 'exactly-32-characters-long-token';
  assert.equal(token.length, 32);
  assert.equal(readConfig(parseDocument(`[http]\nadmin_token = "${token}"\n[apps.a]\nprovider = "log"\n`, 'ops.toml'), 'ops.toml').http.adminToken, token);
});

test('the limits and expiry have documented defaults', () => {
  const config = readConfig(defaultDocument(), 'built-in defaults');
  assert.deepEqual(config.registration, { expireDays: 180, httpPerIpPerMinute: 30, adhocPerJidPerMinute: 10, adhocPerDomainPerMinute: 600, maxPerJid: 50 });
  assert.equal(config.xmpp.connectTimeoutMs, 10_000);
  assert.equal(config.http.trustProxy, false);
});

test('xmpp.read_coalesce_ms defaults to 2, may be 0 (off), and is refused above 50 or below 0, naming the key', () => {
  assert.equal(readConfig(defaultDocument(), 'built-in defaults').xmpp.readCoalesceMs, 2);
  assert.equal(readConfig(parseDocument('[xmpp]\nread_coalesce_ms = 0\n[apps.a]\nprovider = "log"\n', 'ops.toml'), 'ops.toml').xmpp.readCoalesceMs, 0);
  assert.equal(configError('[xmpp]\nread_coalesce_ms = 51\n[apps.a]\nprovider = "log"\n').key, 'xmpp.read_coalesce_ms');
  assert.equal(configError('[xmpp]\nread_coalesce_ms = -1\n[apps.a]\nprovider = "log"\n').key, 'xmpp.read_coalesce_ms');
});

test('apps.NAME.allowed_domains is a list of domains, folded to lower case; an empty list is refused', () => {
  const config = readConfig(parseDocument('[apps.a]\nprovider = "log"\nallowed_domains = ["Example.ORG", "b.example."]\nallowed_ports = [443, 8443]\n', 'ops.toml'), 'ops.toml');
  assert.deepEqual(config.apps.get('a')?.allowedDomains, ['example.org', 'b.example']);
  assert.deepEqual(config.apps.get('a')?.allowedPorts, [443, 8443]);
  assert.equal(configError('[apps.a]\nprovider = "log"\nallowed_domains = []\n').key, 'apps.a.allowed_domains');
  assert.equal(configError('[apps.a]\nprovider = "log"\nallowed_domains = "x,  "\nallowed_ports = [0]\n').key, 'apps.a.allowed_ports');
});
