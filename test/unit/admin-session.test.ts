/**
 * The admin session cookie (http/admin/session.ts): a signed value any instance with the same
 * admin token accepts, and nothing else — whatever a client sends is at most "signed out".
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  CLOCK_SKEW_MS, csrfTokenOf, issueSession, SESSION_COOKIE, SESSION_TTL_MS, sessionKeysOf, Sessions, verifySession, type Session,
} from '../../src/http/admin/session.ts';
import type { HttpRequest } from '../../src/http/server.ts';

const ADMIN_TOKEN = 'unit-test-admin-token-0123456789abcdefghij';
const OTHER_ADMIN_TOKEN = 'another-admin-token-0123456789abcdefghijk';
const NOW = Date.UTC(2026, 0, 2, 3, 4, 5);
const BASE64URL = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_';

function requestWith(cookieValue: string): HttpRequest {
  return {
    method: 'GET', path: '/admin', query: new URLSearchParams(), form: new URLSearchParams(), remoteAddress: '127.0.0.1',
    headers: { cookie: `${SESSION_COOKIE}=${cookieValue}` },
  };
}

test('a freshly issued session verifies as itself, with its CSRF token and a 12-hour expiry', () => {
  const keys = sessionKeysOf(ADMIN_TOKEN);
  const issued = issueSession(keys, NOW);
  const verified = verifySession(keys, issued.cookieValue, NOW + 1000);
  assert.deepEqual(verified, issued);
  assert.equal(issued.expiresAt, NOW + SESSION_TTL_MS);
  assert.equal(SESSION_TTL_MS, 12 * 3600_000);
  assert.ok(!issued.cookieValue.includes(ADMIN_TOKEN), 'the cookie is not the token');
  assert.notEqual(issued.csrf, issued.id);
});

test('two sessions issued at the same moment get different ids and different CSRF tokens', () => {
  const keys = sessionKeysOf(ADMIN_TOKEN);
  const first = issueSession(keys, NOW);
  const second = issueSession(keys, NOW);
  assert.notEqual(first.id, second.id);
  assert.notEqual(first.csrf, second.csrf);
});

test('a session value with any one character changed is refused, the spare bits of the last one included', () => {
  const keys = sessionKeysOf(ADMIN_TOKEN);
  const value = issueSession(keys, NOW).cookieValue;
  for (let i = 0; i < value.length; i++) {
    const at = BASE64URL.indexOf(value[i]);
    // Flipping the lowest bit of a base64url digit: for the last character that changes only the
    // bits a decoder ignores; '.' becomes another character altogether.
    const changed = at < 0 ? 'A' : BASE64URL[at ^ 1];
    const tampered = value.slice(0, i) + changed + value.slice(i + 1);
    assert.equal(verifySession(keys, tampered, NOW), undefined, `character ${i} changed: ${tampered}`);
  }
});

test('a session signed with another admin token is refused', () => {
  const value = issueSession(sessionKeysOf(OTHER_ADMIN_TOKEN), NOW).cookieValue;
  assert.equal(verifySession(sessionKeysOf(ADMIN_TOKEN), value, NOW), undefined);
});

test('a session is accepted until 12 hours after sign-in and refused from then on', () => {
  const keys = sessionKeysOf(ADMIN_TOKEN);
  const value = issueSession(keys, NOW).cookieValue;
  assert.ok(verifySession(keys, value, NOW + SESSION_TTL_MS - 1));
  assert.equal(verifySession(keys, value, NOW + SESSION_TTL_MS), undefined);
  assert.equal(verifySession(keys, value, NOW + 30 * SESSION_TTL_MS), undefined);
});

test('a session signed a little in the future (another instance\'s clock) is accepted, one signed further ahead is refused', () => {
  const keys = sessionKeysOf(ADMIN_TOKEN);
  assert.ok(verifySession(keys, issueSession(keys, NOW + CLOCK_SKEW_MS).cookieValue, NOW));
  assert.equal(verifySession(keys, issueSession(keys, NOW + CLOCK_SKEW_MS + 1).cookieValue, NOW), undefined);
  assert.equal(verifySession(keys, issueSession(keys, NOW + SESSION_TTL_MS).cookieValue, NOW), undefined);
});

test('garbage, an empty value, an over-long value and look-alikes are refused without throwing', () => {
  const keys = sessionKeysOf(ADMIN_TOKEN);
  const good = issueSession(keys, NOW).cookieValue;
  const [, issued, id, mac] = good.split('.');
  const candidates = [
    '', 'garbage', '....', 'v1', `v1.${issued}.${id}`, `${good}.`, `${good}A`, ` ${good}`, good.toUpperCase(),
    `v2.${issued}.${id}.${mac}`, `v1.0${issued}.${id}.${mac}`, `v1.-${issued}.${id}.${mac}`, `v1.${issued}.${id}=.${mac}`,
    `v1.99999999999999999999.${id}.${mac}`, `v1.${issued}.${id}.${mac.slice(0, -1)}`, `v1.${issued}.${id}.${'A'.repeat(43)}`,
    good + 'x'.repeat(10_000), 'v1.'.repeat(100_000), '\u0000'.repeat(84), 'é'.repeat(84), '%76%31',
  ];
  for (const candidate of candidates) {
    assert.doesNotThrow(() => verifySession(keys, candidate, NOW));
    assert.equal(verifySession(keys, candidate, NOW), undefined, candidate.slice(0, 120));
  }
});

test('two independent instances with the same admin token accept each other\'s sessions and compute the same CSRF token', () => {
  const instanceA = new Sessions(ADMIN_TOKEN, () => NOW);
  const instanceB = new Sessions(ADMIN_TOKEN, () => NOW + 5000);
  const session = instanceA.create();
  const onB = instanceB.of(requestWith(session.cookieValue));
  assert.ok(onB, 'instance B accepts the cookie of instance A');
  assert.equal(onB.id, session.id);
  assert.equal(onB.csrf, session.csrf);
  assert.equal(csrfTokenOf(sessionKeysOf(ADMIN_TOKEN), session.id), session.csrf);
});

test('the CSRF token of one session id differs under another admin token, and that instance refuses the cookie', () => {
  const session = new Sessions(ADMIN_TOKEN, () => NOW).create();
  assert.notEqual(csrfTokenOf(sessionKeysOf(OTHER_ADMIN_TOKEN), session.id), session.csrf);
  assert.equal(new Sessions(OTHER_ADMIN_TOKEN, () => NOW).of(requestWith(session.cookieValue)), undefined);
});

test('a session ended on one instance is refused there, and another instance still accepts a copy of its cookie until it expires', () => {
  const instanceA = new Sessions(ADMIN_TOKEN, () => NOW);
  const instanceB = new Sessions(ADMIN_TOKEN, () => NOW);
  const session = instanceA.create();
  const other = instanceA.create();
  instanceA.end(instanceA.of(requestWith(session.cookieValue))!);
  assert.equal(instanceA.of(requestWith(session.cookieValue)), undefined);
  assert.ok(instanceA.of(requestWith(other.cookieValue)), 'another session on the same instance is unaffected');
  assert.ok(instanceB.of(requestWith(session.cookieValue)), 'the documented limit: no shared revocation');
});

test('ended sessions are forgotten once they would have expired anyway', () => {
  let now = NOW;
  const sessions = new Sessions(ADMIN_TOKEN, () => now);
  const ended: Session[] = [];
  for (let i = 0; i < 3; i++) ended.push(sessions.create());
  for (const session of ended) sessions.end(session);
  assert.equal(sessions.endedCount, 3);
  now = NOW + SESSION_TTL_MS;
  const late = sessions.create();
  sessions.end(late);
  assert.equal(sessions.endedCount, 1, 'only the session still valid is remembered');
  assert.equal(sessions.of(requestWith(ended[0].cookieValue)), undefined, 'the forgotten ones are expired anyway');
  assert.equal(sessions.of(requestWith(late.cookieValue)), undefined);
});

test('no request cookie, or only other cookies, means signed out', () => {
  const sessions = new Sessions(ADMIN_TOKEN, () => NOW);
  const bare = { ...requestWith(''), headers: {} };
  assert.equal(sessions.of(bare), undefined);
  assert.equal(sessions.of({ ...bare, headers: { cookie: 'pa_admin_login=abc; other=1' } }), undefined);
});
