/**
 * The command line exactly as operators run it: `bin/push-appserver serve|check-config` in a
 * child process (the same script `npm start` reaches), with real files and signals.
 */
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { freePort } from '../support/ports.ts';
import { testTempDir } from '../support/temp-dir.ts';

const CLI = join(import.meta.dirname, '..', '..', 'bin', 'push-appserver');

function writeConfig(text: string): string {
  const dir = testTempDir('push-appserver-cli-');
  const file = join(dir, 'push-appserver.toml');
  writeFileSync(file, text);
  return file;
}

function cli(args: string[], env: Record<string, string> = {}) {
  return spawnSync(CLI, args, { encoding: 'utf8', env: { ...process.env, ...env }, timeout: 30_000 });
}

describe('command line', () => {
  test('check-config prints the effective config with secrets masked', () => {
    const file = writeConfig('[xmpp]\ncomponent_secret = "hunter2"\n[http]\nadmin_token = "tok-123"\n[apps.apns]\nprovider = "log"\n');
    const result = cli(['check-config', '--config', file]);
    assert.equal(result.status, 0, result.stderr);
    assert.match(result.stdout, /component_secret = "\*+"/);
    assert.match(result.stdout, /port = 5280/);
    assert.doesNotMatch(result.stdout, /hunter2|tok-123/);
  });

  test('check-config on a bad config names the file and the key and exits non-zero', () => {
    const file = writeConfig('[http]\nport = -1\n[apps.apns]\nprovider = "log"\n');
    const result = cli(['check-config', '--config', file]);
    assert.notEqual(result.status, 0);
    assert.match(result.stderr, new RegExp(`${file.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}: http\\.port: must be at least 0`));
    assert.doesNotMatch(result.stderr, /at .*\.ts:\d+/, 'no stack trace');
  });

  test('a missing config file is a one-line error', () => {
    const result = cli(['serve', '--config', '/nonexistent/push.toml']);
    assert.equal(result.status, 2);
    assert.match(result.stderr, /\/nonexistent\/push\.toml: \(file\): cannot read the configuration: file not found/);
  });

  test('environment variables override the file in check-config', () => {
    const file = writeConfig('[apps.apns]\nprovider = "log"\n');
    const result = cli(['check-config', '--config', file], { PUSH_APPSERVER_HTTP__PORT: '6001' });
    assert.equal(result.status, 0, result.stderr);
    assert.match(result.stdout, /port = 6001/);
  });

  test('serve answers health over HTTP and stops cleanly on SIGTERM', async () => {
    const port = await freePort();
    const dir = testTempDir('push-appserver-serve-');
    const file = writeConfig(`[http]\nport = ${port}\n[storage]\nurl = "sqlite:${join(dir, 'push.db')}"\n[xmpp]\nserver_port = 1\n[apps.apns]\nprovider = "log"\n`);
    const child = spawn(CLI, ['serve', '--config', file], { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (chunk) => { stderr += String(chunk); });
    try {
      let response: Response | undefined;
      for (let attempt = 0; attempt < 100 && !response; attempt++) {
        response = await fetch(`http://127.0.0.1:${port}/push_appserver/v1/health`).catch(() => undefined);
        if (!response) await new Promise((resolve) => setTimeout(resolve, 100));
      }
      assert.ok(response, `server did not answer: ${stderr}`);
      assert.equal(response.status, 200);
      assert.equal(await response.text(), 'RUNNING');
    } finally {
      const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
      child.kill('SIGTERM');
      assert.equal(await exited, 0, stderr);
    }
    assert.match(stderr, /stopped/);
  });
});

test('the example configuration shipped in config/ passes check-config', () => {
  const example = join(import.meta.dirname, '..', '..', 'config', 'push-appserver.example.toml');
  const result = spawnSync(CLI, ['check-config', '--config', example], { encoding: 'utf8', timeout: 30_000 });
  assert.equal(result.status, 0, result.stderr);
});
