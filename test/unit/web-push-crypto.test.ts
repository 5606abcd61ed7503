/**
 * RFC 8291 message encryption and RFC 8292 VAPID (src/providers/web-push-crypto.ts). The RFC 8291
 * §5 example (intermediate values from its Appendix A) pins every derivation step to published
 * bytes; the round trips decrypt with the mock's separate implementation.
 */
import assert from 'node:assert/strict';
import { createECDH, randomBytes } from 'node:crypto';
import { test } from 'node:test';
import {
  deriveContentKeys,
  encryptPushMessage,
  generateVapidKeys,
  HEADER_BYTES,
  isP256PublicKey,
  MAX_PLAINTEXT_BYTES,
  parseVapidKeys,
  RECORD_SIZE,
  VapidSigner,
  type VapidKeys,
} from '../../src/providers/web-push-crypto.ts';
import { decryptPushMessage, verifyVapid } from '../support/mock-push-endpoint.ts';

const b64 = (text: string) => Buffer.from(text, 'base64url');

/** RFC 8291 §5 and Appendix A. */
const RFC8291 = {
  plaintext: 'When I grow up, I want to be a watermelon',
  uaPrivate: b64('q1dXpw3UpT5VOmu_cf_v6ih07Aems3njxI-JWgLcM94'),
  uaPublic: b64('BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4'),
  asPrivate: b64('yfWPiYE-n46HLnH0KqZOF1fJJU3MYrct3AELtAQ-oRw'),
  asPublic: b64('BP4z9KsN6nGRTbVYI_c7VJSPQTBtkgcy27mlmlMoZIIgDll6e3vCYLocInmYWAmS6TlzAC8wEqKK6PBru3jl7A8'),
  auth: b64('BTBZMqHH6r4Tts7J_aSIgg'),
  salt: b64('DGv6ra1nlYgDCS1FRnbzlw'),
  ecdhSecret: 'kyrL1jIIOHEzg3sM2ZWRHDRB62YACZhhSlknJ672kSs',
  ikm: 'S4lYMb_L0FxCeq0WhDx813KgSYqU26kOyzWUdsXYyrg',
  cek: 'oIhVW04MRdy2XN9CiKLxTg',
  nonce: '4h_95klXJ5E_qnoN',
  body: 'DGv6ra1nlYgDCS1FRnbzlwAAEABBBP4z9KsN6nGRTbVYI_c7VJSPQTBtkgcy27mlmlMoZIIgDll6e3vCYLocInmYWAmS6TlzAC8wEqKK6PBru3jl7A_yl95bQpu6cVPTpK4Mqgkf1CXztLVBSt2Ks3oZwbuwXPXLWyouBWLVWGNWQexSgSxsj_Qulcy4a-fN',
};

function rfcSenderKeys() {
  const sender = createECDH('prime256v1');
  sender.setPrivateKey(RFC8291.asPrivate);
  return sender;
}

function freshSubscription() {
  const ua = createECDH('prime256v1');
  ua.generateKeys();
  return { ua, keys: { p256dh: ua.getPublicKey(), auth: randomBytes(16) } };
}

test('encrypting the RFC 8291 §5 example with its keys and salt gives exactly the published body', () => {
  const body = encryptPushMessage(Buffer.from(RFC8291.plaintext), { p256dh: RFC8291.uaPublic, auth: RFC8291.auth }, { senderKeys: rfcSenderKeys(), salt: RFC8291.salt });
  assert.equal(body.toString('base64url'), RFC8291.body);
});

test('the key derivation reproduces the RFC 8291 Appendix A intermediate values', () => {
  const sender = rfcSenderKeys();
  assert.equal(sender.getPublicKey().toString('base64url'), RFC8291.asPublic.toString('base64url'));
  const ecdhSecret = sender.computeSecret(RFC8291.uaPublic);
  assert.equal(ecdhSecret.toString('base64url'), RFC8291.ecdhSecret);
  const keys = deriveContentKeys(ecdhSecret, RFC8291.auth, RFC8291.uaPublic, RFC8291.asPublic, RFC8291.salt);
  assert.equal(keys.ikm.toString('base64url'), RFC8291.ikm);
  assert.equal(keys.cek.toString('base64url'), RFC8291.cek);
  assert.equal(keys.nonce.toString('base64url'), RFC8291.nonce);
});

test('the mock push service decrypts the RFC 8291 §5 body with the user agent private key', () => {
  const plaintext = decryptPushMessage(b64(RFC8291.body), RFC8291.uaPrivate, RFC8291.uaPublic, RFC8291.auth);
  assert.equal(plaintext.toString('utf8'), RFC8291.plaintext);
});

test('a message to a fresh subscription decrypts with that subscription private key and auth secret', () => {
  const { ua, keys } = freshSubscription();
  const message = Buffer.from(JSON.stringify({ 'message-count': 3 }));
  const body = encryptPushMessage(message, keys);
  assert.equal(body.readUInt32BE(16), RECORD_SIZE);
  assert.equal(body[20], 65);
  assert.deepEqual(decryptPushMessage(body, ua.getPrivateKey(), keys.p256dh, keys.auth), message);
});

test('a message does not decrypt with another subscription auth secret', () => {
  const { ua, keys } = freshSubscription();
  const body = encryptPushMessage(Buffer.from('hello'), keys);
  assert.throws(() => decryptPushMessage(body, ua.getPrivateKey(), keys.p256dh, randomBytes(16)), /unable to authenticate|auth/i);
});

test('every message gets its own salt and sender key', () => {
  const { keys } = freshSubscription();
  const first = encryptPushMessage(Buffer.from('same'), keys);
  const second = encryptPushMessage(Buffer.from('same'), keys);
  assert.notDeepEqual(first.subarray(0, 16), second.subarray(0, 16));
  assert.notDeepEqual(first.subarray(21, HEADER_BYTES), second.subarray(21, HEADER_BYTES));
});

test('the largest allowed plaintext makes a body of exactly 4096 bytes and one byte more is refused', () => {
  const { ua, keys } = freshSubscription();
  const body = encryptPushMessage(Buffer.alloc(MAX_PLAINTEXT_BYTES, 0x61), keys);
  assert.equal(body.length, 4096);
  assert.equal(decryptPushMessage(body, ua.getPrivateKey(), keys.p256dh, keys.auth).length, MAX_PLAINTEXT_BYTES);
  assert.throws(() => encryptPushMessage(Buffer.alloc(MAX_PLAINTEXT_BYTES + 1), keys), RangeError);
});

test('a p256dh key that is not a point on P-256 is recognised as such', () => {
  const { keys } = freshSubscription();
  assert.equal(isP256PublicKey(keys.p256dh), true);
  const offCurve = Buffer.from(keys.p256dh);
  offCurve[64] ^= 1;
  assert.equal(isP256PublicKey(offCurve), false);
  assert.equal(isP256PublicKey(keys.p256dh.subarray(0, 33)), false);
});

test('generated VAPID keys are 65-byte and 32-byte base64url values that parse as a pair', () => {
  const pair = generateVapidKeys();
  assert.equal(b64(pair.publicKey).length, 65);
  assert.equal(b64(pair.privateKey).length, 32);
  const parsed = parseVapidKeys(pair.publicKey, pair.privateKey);
  assert.notEqual(typeof parsed, 'string');
});

test('VAPID keys that do not belong together are refused with the reason', () => {
  const one = generateVapidKeys();
  const other = generateVapidKeys();
  assert.match(parseVapidKeys(one.publicKey, other.privateKey) as string, /does not belong/);
  assert.match(parseVapidKeys(one.publicKey.slice(0, 40), one.privateKey) as string, /vapid_public_key/);
  assert.match(parseVapidKeys(one.publicKey, 'not base64!') as string, /vapid_private_key/);
});

test('the VAPID authorization is an ES256 JWT for the endpoint origin that a push service accepts', () => {
  const pair = generateVapidKeys();
  const signer = new VapidSigner(parseVapidKeys(pair.publicKey, pair.privateKey) as VapidKeys, 'mailto:ops@example.org');
  const value = signer.authorization(new URL('https://push.example.net:8443/wpush/v2/abc?x=1'));
  const claims = verifyVapid(value, 'https://push.example.net:8443');
  assert.equal(claims.sub, 'mailto:ops@example.org');
  assert.equal(claims.publicKey, pair.publicKey);
  const nowS = Date.now() / 1000;
  assert.ok(claims.exp > nowS + 3600 && claims.exp <= nowS + 24 * 3600);
});

test('the VAPID token is reused for the same origin and signed again shortly before it expires', () => {
  const pair = generateVapidKeys();
  let now = Date.parse('2025-01-01T00:00:00Z');
  const signer = new VapidSigner(parseVapidKeys(pair.publicKey, pair.privateKey) as VapidKeys, 'https://example.org/contact', () => now);
  const first = signer.authorization(new URL('https://push.example.net/a'));
  assert.equal(signer.authorization(new URL('https://push.example.net/b')), first);
  assert.notEqual(signer.authorization(new URL('https://other.example.net/a')), first);
  now += 11.5 * 3600 * 1000;
  const renewed = signer.authorization(new URL('https://push.example.net/a'));
  assert.notEqual(renewed, first);
  verifyVapid(renewed, 'https://push.example.net', now);
});
