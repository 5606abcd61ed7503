import assert from 'node:assert/strict';
import { generateKeyPairSync } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { after, before, describe, test } from 'node:test';
import { FIREBASE_MESSAGING_SCOPE, GoogleAccessTokens, parseServiceAccount, type ServiceAccount } from '../../src/providers/google-auth.ts';
import { retryAfterMs } from '../../src/providers/retry-after.ts';
import { startMockFcm, type MockFcm } from '../support/mock-fcm.ts';

function accountJson(overrides: Record<string, unknown>): string {
  const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 1024 });
  return JSON.stringify({
    type: 'service_account',
    project_id: 'p',
    client_email: 'sa@p.iam.gserviceaccount.com',
    private_key: privateKey.export({ type: 'pkcs8', format: 'pem' }),
    token_uri: 'https://oauth2.googleapis.com/token',
    ...overrides,
  });
}

describe('service account file', () => {
  test('a complete service account key is read with its project, email, key id and token URI', () => {
    const account = parseServiceAccount(accountJson({ private_key_id: 'abc' }));
    assert.equal(account.projectId, 'p');
    assert.equal(account.clientEmail, 'sa@p.iam.gserviceaccount.com');
    assert.equal(account.privateKeyId, 'abc');
    assert.equal(account.tokenUri, 'https://oauth2.googleapis.com/token');
    assert.equal(account.privateKey.asymmetricKeyType, 'rsa');
  });

  test('a missing field is named in the error', () => {
    assert.throws(() => parseServiceAccount(accountJson({ client_email: undefined })), /"client_email" is missing/);
    assert.throws(() => parseServiceAccount(accountJson({ project_id: '' })), /"project_id" is missing/);
  });

  test('a file that is not JSON is refused as such', () => {
    assert.throws(() => parseServiceAccount('{ nope'), /not valid JSON/);
  });

  test('a key of another type than service_account is refused', () => {
    assert.throws(() => parseServiceAccount(accountJson({ type: 'authorized_user' })), /"type" is "authorized_user"/);
  });

  test('an unreadable private key is named in the error', () => {
    assert.throws(() => parseServiceAccount(accountJson({ private_key: 'not a pem' })), /"private_key" is not a readable PEM private key/);
  });

  test('an EC private key is refused because Google wants RS256', () => {
    const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    assert.throws(() => parseServiceAccount(accountJson({ private_key: privateKey.export({ type: 'pkcs8', format: 'pem' }) })), /must be an RSA key/);
  });

  test('a token_uri that is not https is refused', () => {
    assert.throws(() => parseServiceAccount(accountJson({ token_uri: 'http://oauth2.googleapis.com/token' })), /"token_uri" must be an https URL/);
  });
});

describe('Retry-After', () => {
  test('delay-seconds and HTTP-dates both become milliseconds', () => {
    assert.equal(retryAfterMs('7', 0), 7000);
    assert.equal(retryAfterMs(new Date(30_000).toUTCString(), 10_000), 20_000);
    assert.equal(retryAfterMs(undefined, 0), undefined);
    assert.equal(retryAfterMs('soon', 0), undefined);
  });
});

describe('access tokens from the token endpoint', () => {
  let mock: MockFcm;
  let account: ServiceAccount;
  let ca: string;

  before(async () => {
    mock = await startMockFcm();
    account = parseServiceAccount(readFileSync(mock.account.file, 'utf8'));
    ca = readFileSync(mock.caFile, 'utf8');
  });
  after(async () => {
    await mock.close();
  });

  function tokens(now?: () => number): GoogleAccessTokens {
    mock.setTokenEndpointFailure(undefined);
    mock.setTokenEndpointDelay(0);
    mock.setTokenLifetime(3600);
    return new GoogleAccessTokens({ account, scope: FIREBASE_MESSAGING_SCOPE, ca, now });
  }

  test('the RS256 assertion is accepted by the token endpoint and yields an access token', async () => {
    const before = mock.tokenRequests.length;
    const result = await tokens().get();
    assert.equal(result.ok, true);
    assert.ok(result.ok && result.token.startsWith('ya29.mock-access-token-'));
    assert.ok(result.ok && result.fresh);
    const recorded = mock.tokenRequests.slice(before);
    assert.equal(recorded.length, 1);
    assert.equal(recorded[0].ok, true, recorded[0].reason);
  });

  test('the assertion names the account, the firebase.messaging scope, the token URI and lives one hour', async () => {
    const before = mock.tokenRequests.length;
    await tokens().get();
    const { header, claims } = mock.tokenRequests[before];
    assert.equal(header?.alg, 'RS256');
    assert.equal(header?.kid, mock.account.privateKeyId);
    assert.equal(claims?.iss, mock.account.clientEmail);
    assert.equal(claims?.scope, 'https://www.googleapis.com/auth/firebase.messaging');
    assert.equal(claims?.aud, mock.tokenUri);
    assert.equal((claims?.exp as number) - (claims?.iat as number), 3600);
  });

  test('a cached access token is reused without another exchange', async () => {
    const source = tokens();
    const first = await source.get();
    const second = await source.get();
    assert.ok(first.ok && second.ok);
    assert.equal(second.token, first.token);
    assert.equal(second.fresh, false);
    assert.equal(source.exchanges, 1);
  });

  test('the access token is refreshed shortly before it expires, not after', async () => {
    // The clock starts in the past so that the refresh assertion is signed at the real time.
    let now = Date.now() - 56 * 60_000;
    const source = tokens(() => now);
    const first = await source.get();
    now += 54 * 60_000;
    const stillCached = await source.get();
    now += 2 * 60_000; // 56 minutes in: within five minutes of the hour
    const refreshed = await source.get();
    assert.ok(first.ok && stillCached.ok && refreshed.ok);
    assert.equal(stillCached.token, first.token);
    assert.notEqual(refreshed.token, first.token);
    assert.equal(source.exchanges, 2);
  });

  test('a short-lived access token is refreshed at half its life', async () => {
    let now = Date.now() - 31_000;
    const source = tokens(() => now);
    mock.setTokenLifetime(60);
    const first = await source.get();
    now += 29_000;
    const cached = await source.get();
    now += 2_000;
    const refreshed = await source.get();
    assert.ok(first.ok && cached.ok && refreshed.ok);
    assert.equal(cached.token, first.token);
    assert.notEqual(refreshed.token, first.token);
  });

  test('many concurrent callers share one exchange', async () => {
    const source = tokens();
    mock.setTokenEndpointDelay(50);
    const before = mock.tokenRequests.length;
    const results = await Promise.all(Array.from({ length: 25 }, () => source.get()));
    assert.equal(source.exchanges, 1);
    assert.equal(mock.tokenRequests.length - before, 1);
    assert.equal(new Set(results.map((r) => (r.ok ? r.token : r.reason))).size, 1);
  });

  test('an invalidated token is exchanged again on the next call', async () => {
    const source = tokens();
    const first = await source.get();
    assert.ok(first.ok);
    source.invalidate(first.token);
    const second = await source.get();
    assert.ok(second.ok && second.fresh);
    assert.notEqual(second.token, first.token);
  });

  test('a refused grant is our credentials being rejected', async () => {
    const source = tokens();
    mock.setTokenEndpointFailure({ status: 400, error: 'invalid_grant', description: 'Invalid JWT Signature.' });
    const result = await source.get();
    assert.equal(result.ok, false);
    assert.ok(!result.ok && result.kind === 'credentials-rejected');
    assert.match(!result.ok ? result.reason : '', /invalid_grant: Invalid JWT Signature/);
  });

  test('an assertion signed with another key is refused by the endpoint', async () => {
    const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 1024 });
    const source = new GoogleAccessTokens({ account: { ...account, privateKey }, scope: FIREBASE_MESSAGING_SCOPE, ca });
    mock.setTokenEndpointFailure(undefined);
    const result = await source.get();
    assert.ok(!result.ok && result.kind === 'credentials-rejected');
    assert.match(!result.ok ? result.reason : '', /Invalid JWT Signature/);
  });

  test('a failing token endpoint is transient and its Retry-After is kept', async () => {
    const source = tokens();
    mock.setTokenEndpointFailure({ status: 503, error: 'temporarily_unavailable', retryAfterS: 3 });
    const result = await source.get();
    assert.ok(!result.ok && result.kind === 'retry');
    assert.equal(!result.ok && result.retryAfterMs, 3000);
  });

  test('a failed exchange is not cached: the next call tries again and succeeds', async () => {
    const source = tokens();
    mock.setTokenEndpointFailure({ status: 500, error: 'internal_failure' });
    assert.equal((await source.get()).ok, false);
    mock.setTokenEndpointFailure(undefined);
    assert.equal((await source.get()).ok, true);
    assert.equal(source.exchanges, 2);
  });

  test('an unreachable token endpoint is transient', async () => {
    const source = new GoogleAccessTokens({ account: { ...account, tokenUri: 'https://127.0.0.1:1/token' }, scope: FIREBASE_MESSAGING_SCOPE, ca });
    const result = await source.get();
    assert.ok(!result.ok && result.kind === 'retry');
    assert.match(!result.ok ? result.reason : '', /unreachable/);
  });
});

