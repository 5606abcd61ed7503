/** Naming a lease's holder, and telling whether it still runs (src/store/lease-holder.ts). */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { test } from 'node:test';
import { holderOfProcess, holderState, thisProcessHolder } from '../../src/store/lease-holder.ts';


test('this process names itself by boot, pid namespace, pid and start time, and counts as running', () => {
  const holder = thisProcessHolder();
  assert.ok(holder);
  const [kind, boot, namespace, pid, startTime] = holder.split('|');
  assert.equal(kind, 'linux');
  assert.match(boot, /^[0-9a-f-]{36}$/);
  assert.match(namespace, /^pid:\[\d+\]$/);
  assert.equal(Number(pid), process.pid);
  assert.match(startTime, /^\d+$/);
  assert.equal(holderState(holder), 'running');
});

test('a holder killed with SIGKILL is gone once it has exited', async () => {
  const child = spawn('sleep', ['60'], { stdio: 'ignore' });
  await once(child, 'spawn');
  const holder = holderOfProcess(child.pid!);
  assert.ok(holder);
  assert.equal(holderState(holder), 'running');
  child.kill('SIGKILL');
  await once(child, 'exit');
  assert.equal(holderState(holder), 'gone');
});

test('a pid that another process took since (another start time) is gone', () => {
  const [kind, boot, namespace, pid, startTime] = thisProcessHolder()!.split('|');
  assert.equal(holderState([kind, boot, namespace, pid, String(Number(startTime) + 1)].join('|')), 'gone');
});

test('a holder of another boot, another pid namespace, or one that does not parse is unknown, never gone', () => {
  const [kind, boot, namespace, pid, startTime] = thisProcessHolder()!.split('|');
  assert.equal(holderState([kind, '00000000-0000-0000-0000-000000000000', namespace, pid, startTime].join('|')), 'unknown');
  assert.equal(holderState([kind, boot, 'pid:[1]', pid, startTime].join('|')), 'unknown');
  assert.equal(holderState('holder-me'), 'unknown');
  assert.equal(holderState(`${kind}|${boot}|${namespace}|0|${startTime}`), 'unknown');
  assert.equal(holderState(`${kind}|${boot}|${namespace}|${pid}|${startTime}|extra`), 'unknown');
});
