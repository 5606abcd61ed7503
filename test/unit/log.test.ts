import assert from 'node:assert/strict';
import { test } from 'node:test';
import { createLogger, type LoggerOptions } from '../../src/log.ts';

function capture(options: LoggerOptions = {}) {
  const lines: string[] = [];
  const waiters: Array<() => void> = [];
  const logger = createLogger({ ...options, sink: { write: (line) => { lines.push(line); waiters.splice(0).forEach((wake) => wake()); } } });
  const next = () => new Promise<void>((resolve) => waiters.push(resolve));
  return { logger, lines, next };
}

const APNS_TOKEN = 'a1b2c3d4'.repeat(8);

test('the text format stays `time LEVEL [scope] message key=value`', () => {
  const { logger, lines } = capture({ now: () => Date.UTC(2026, 0, 2, 3, 4, 5) });
  logger.child('xmpp').info('component online', { jid: 'push.example.org', note: 'two words' });
  assert.equal(lines[0], '2026-01-02T03:04:05.000Z INFO  [push-appserver:xmpp] component online jid=push.example.org note="two words"\n');
});

test('the JSON format writes one object per line with time, level, logger, msg and the fields', () => {
  const { logger, lines } = capture({ format: 'json', now: () => Date.UTC(2026, 0, 2, 3, 4, 5) });
  logger.child('dispatch').warn('push rejected', { app: 'ios', attempts: 3, msg: 'a field named like a key' });
  assert.equal(lines.length, 1);
  assert.ok(lines[0].endsWith('\n') && !lines[0].slice(0, -1).includes('\n'));
  assert.deepEqual(JSON.parse(lines[0]), {
    time: '2026-01-02T03:04:05.000Z', level: 'warn', logger: 'push-appserver:dispatch', msg: 'push rejected',
    app: 'ios', attempts: 3, field_msg: 'a field named like a key',
  });
});

test('secrets are masked and device tokens shortened in both formats, nested fields included', () => {
  for (const format of ['text', 'json'] as const) {
    const { logger, lines } = capture({ format });
    logger.info('registered', {
      secret: 'hunter2-very-secret', component_secret: 'shared-xep0114-secret', token: APNS_TOKEN,
      url: '/push_appserver/v1/settings?token=0123456789abcdef0123456789abcdef&after=x',
      request: { device_token: APNS_TOKEN, passphrase: 'p12-passphrase' },
    });
    const line = lines[0];
    for (const secret of ['hunter2-very-secret', 'shared-xep0114-secret', APNS_TOKEN, '0123456789abcdef0123456789abcdef', 'p12-passphrase']) {
      assert.ok(!line.includes(secret), `${format} line leaks ${secret}: ${line}`);
    }
    assert.ok(line.includes('a1b2c3d4…c3d4'), `${format}: the token is shortened, not dropped: ${line}`);
    assert.ok(line.includes('token=********&after=x'), `${format}: query secret masked: ${line}`);
  }
});

test('a device token logged as a stateless target\'s node or key is shortened; our UUID nodes are shown whole', () => {
  for (const format of ['text', 'json'] as const) {
    const { logger, lines } = capture({ format });
    logger.info('push will be retried', { node: APNS_TOKEN });
    logger.info('pending retry dropped: its target is gone', { node: `ios\u0000${APNS_TOKEN}\u0000push2` });
    logger.info('retried push', { node: '0f8fad5b-d9cb-469f-a165-70867728950e' });
    for (const line of lines.slice(0, 2)) {
      assert.ok(!line.includes(APNS_TOKEN), `${format} line leaks the token: ${line}`);
      assert.ok(line.includes('a1b2c3d4…c3d4'), `${format}: shortened, not dropped: ${line}`);
    }
    assert.ok(lines[1].includes('ios/a1b2c3d4…c3d4/push2'), `${format}: the key's parts: ${lines[1]}`);
    assert.ok(lines[2].includes('0f8fad5b-d9cb-469f-a165-70867728950e'), `${format}: a UUID node stays whole: ${lines[2]}`);
  }
});

test('an error carries its stack only at debug level', () => {
  const error = new Error('boom');
  const atInfo = capture({ format: 'json', level: 'info' });
  atInfo.logger.error('handler failed', { error });
  assert.deepEqual(Object.keys(JSON.parse(atInfo.lines[0])).sort(), ['error', 'level', 'logger', 'msg', 'time']);
  assert.equal(JSON.parse(atInfo.lines[0]).error, 'boom');

  const atDebug = capture({ format: 'json', level: 'debug' });
  atDebug.logger.error('handler failed', { error });
  assert.match(JSON.parse(atDebug.lines[0]).error_stack, /Error: boom\n\s+at /);

  const textInfo = capture({ level: 'info' });
  textInfo.logger.error('handler failed', { error });
  assert.equal(textInfo.lines[0].split('\n').length, 2, 'one line, no stack');
  const textDebug = capture({ level: 'debug' });
  textDebug.logger.error('handler failed', { error });
  assert.match(textDebug.lines[0], /error="boom"\nError: boom\n\s+at /);
});

test('a warning repeated thousands of times a second is printed a few times, then summarised with the count', () => {
  let now = 1_000_000;
  const { logger, lines } = capture({ now: () => now, repeatBurst: 3 });
  const log = logger.child('dispatch');
  for (let i = 0; i < 5000; i++) log.warn('push rejected', { n: i });
  log.warn('another kind of warning');
  assert.equal(lines.filter((line) => line.includes('push rejected')).length, 3);
  assert.equal(lines.filter((line) => line.includes('another kind')).length, 1, 'other kinds have their own budget');
  now += 1000;
  log.warn('push rejected', { n: 5000 });
  const summary = lines.find((line) => line.includes('repeated'));
  assert.match(summary ?? '', /WARN  \[push-appserver:dispatch\] push rejected \(repeated 4997 more times in 1 s, not printed\) suppressed=4997/);
  assert.match(lines.at(-1)!, /push rejected n=5000/, 'a new second prints again');
});

test('the summary is printed when the burst ends, without a further warning to trigger it', async () => {
  const { logger, lines, next } = capture({ repeatBurst: 1, format: 'json' });
  logger.error('cannot write', { n: 1 });
  logger.error('cannot write', { n: 2 });
  logger.error('cannot write', { n: 3 });
  assert.equal(lines.length, 1);
  await next();
  const summary = JSON.parse(lines[1]);
  assert.equal(summary.level, 'error');
  assert.equal(summary.suppressed, 2);
});

test('info and debug lines are never summarised', () => {
  const { logger, lines } = capture({ level: 'debug', repeatBurst: 1 });
  for (let i = 0; i < 20; i++) logger.debug('pushed', { n: i });
  for (let i = 0; i < 20; i++) logger.info('retried push', { n: i });
  assert.equal(lines.length, 40);
});
