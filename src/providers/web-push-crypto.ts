/**
 * The cryptography of WebPush, with node:crypto only:
 * - RFC 8291 message encryption: ECDH (P-256) with the subscription's `p256dh` key, the `auth`
 *   secret mixed in through HKDF (§3.3–3.4), content encrypted with the `aes128gcm` content coding
 *   of RFC 8188 (§2: header salt‖rs‖idlen‖keyid, one record ending in the 0x02 delimiter).
 * - RFC 8292 VAPID: an ES256 JWT (aud = the push service origin, exp ≤ 24 h, sub = contact) in
 *   `Authorization: vapid t=<jwt>, k=<public key>` (§3), keys as base64url raw values (the 65-byte
 *   uncompressed public point and the 32-byte private scalar), as every WebPush library writes them.
 */
import { createCipheriv, createECDH, createPrivateKey, ECDH, hkdfSync, randomBytes, type KeyObject } from 'node:crypto';
import { signJwt } from './jwt.ts';

const CURVE = 'prime256v1';
const SALT_BYTES = 16;
export const AUTH_SECRET_BYTES = 16;
const PUBLIC_KEY_BYTES = 65;
const TAG_BYTES = 16;
/** The record size we announce; push services accept at most 4096 bytes of body, so one record. */
export const RECORD_SIZE = 4096;
/** salt(16) ‖ rs(4) ‖ idlen(1) ‖ keyid(65): RFC 8188 §2.1 with the sender's public key as keyid. */
export const HEADER_BYTES = SALT_BYTES + 4 + 1 + PUBLIC_KEY_BYTES;
/** The largest plaintext that fits one 4096-byte push message (header, delimiter and tag taken off). */
export const MAX_PLAINTEXT_BYTES = RECORD_SIZE - HEADER_BYTES - 1 - TAG_BYTES;

export interface SubscriptionKeys {
  /** The user agent's ECDH public key, 65 bytes uncompressed (`keys.p256dh`). */
  p256dh: Buffer;
  /** The 16-byte authentication secret (`keys.auth`). */
  auth: Buffer;
}

/** True when the bytes are an uncompressed point on P-256 (junk would only fail at send time). */
export function isP256PublicKey(bytes: Buffer): boolean {
  if (bytes.length !== PUBLIC_KEY_BYTES || bytes[0] !== 0x04) return false;
  try {
    ECDH.convertKey(bytes, CURVE);
    return true;
  } catch {
    return false;
  }
}

export interface ContentKeys {
  ikm: Buffer;
  cek: Buffer;
  nonce: Buffer;
}

/** RFC 8291 §3.4: the auth secret and both public keys bind the shared secret to this subscription. */
export function deriveContentKeys(ecdhSecret: Buffer, authSecret: Buffer, uaPublic: Buffer, asPublic: Buffer, salt: Buffer): ContentKeys {
  const keyInfo = Buffer.concat([Buffer.from('WebPush: info\0'), uaPublic, asPublic]);
  const ikm = Buffer.from(hkdfSync('sha256', ecdhSecret, authSecret, keyInfo, 32));
  const cek = Buffer.from(hkdfSync('sha256', ikm, salt, Buffer.from('Content-Encoding: aes128gcm\0'), 16));
  const nonce = Buffer.from(hkdfSync('sha256', ikm, salt, Buffer.from('Content-Encoding: nonce\0'), 12));
  return { ikm, cek, nonce };
}

export interface EncryptOptions {
  /** The sender's ECDH key pair; a fresh one per message unless a test pins it. */
  senderKeys?: ECDH;
  /** 16 random bytes unless a test pins them. */
  salt?: Buffer;
}

/**
 * Encrypts one push message (RFC 8291 §4): the whole body of the POST. Throws on a plaintext too
 * large for one record or a p256dh key that is not a P-256 point (callers validate both first).
 */
export function encryptPushMessage(plaintext: Buffer, keys: SubscriptionKeys, options: EncryptOptions = {}): Buffer {
  if (plaintext.length > MAX_PLAINTEXT_BYTES) throw new RangeError(`push message of ${plaintext.length} bytes exceeds ${MAX_PLAINTEXT_BYTES}`);
  if (keys.auth.length !== AUTH_SECRET_BYTES) throw new RangeError(`auth secret must be ${AUTH_SECRET_BYTES} bytes`);
  let sender = options.senderKeys;
  if (!sender) {
    sender = createECDH(CURVE);
    sender.generateKeys();
  }
  const salt = options.salt ?? randomBytes(SALT_BYTES);
  const asPublic = sender.getPublicKey();
  const ecdhSecret = sender.computeSecret(keys.p256dh);
  const { cek, nonce } = deriveContentKeys(ecdhSecret, keys.auth, keys.p256dh, asPublic, salt);

  const header = Buffer.alloc(HEADER_BYTES);
  salt.copy(header, 0);
  header.writeUInt32BE(RECORD_SIZE, SALT_BYTES);
  header[SALT_BYTES + 4] = PUBLIC_KEY_BYTES;
  asPublic.copy(header, SALT_BYTES + 5);

  // One record, so its sequence number is 0 and the nonce is used as derived (RFC 8188 §2.3);
  // 0x02 marks the last record and no padding follows.
  const cipher = createCipheriv('aes-128-gcm', cek, nonce);
  const ciphertext = Buffer.concat([cipher.update(plaintext), cipher.update(Buffer.from([0x02])), cipher.final(), cipher.getAuthTag()]);
  return Buffer.concat([header, ciphertext]);
}

export interface VapidKeys {
  /** 65-byte uncompressed public point, sent as `k=` and checked by push services. */
  publicKey: Buffer;
  privateKey: KeyObject;
}

/** Parses the base64url raw key pair from config; a string says what is wrong. */
export function parseVapidKeys(publicKeyText: string, privateKeyText: string): VapidKeys | string {
  const publicKey = decodeBase64url(publicKeyText);
  if (!publicKey || !isP256PublicKey(publicKey)) return 'vapid_public_key must be the base64url of a 65-byte uncompressed P-256 point (87 characters, from `push-appserver vapid-keys`)';
  const d = decodeBase64url(privateKeyText);
  if (!d || d.length !== 32) return 'vapid_private_key must be the base64url of a 32-byte P-256 private key (43 characters, from `push-appserver vapid-keys`)';
  const ecdh = createECDH(CURVE);
  try {
    ecdh.setPrivateKey(d);
  } catch {
    return 'vapid_private_key is not a valid P-256 private key';
  }
  if (!ecdh.getPublicKey().equals(publicKey)) return 'vapid_public_key does not belong to vapid_private_key';
  const privateKey = createPrivateKey({
    key: { kty: 'EC', crv: 'P-256', d: d.toString('base64url'), x: publicKey.subarray(1, 33).toString('base64url'), y: publicKey.subarray(33).toString('base64url') },
    format: 'jwk',
  });
  return { publicKey, privateKey };
}

export function generateVapidKeys(): { publicKey: string; privateKey: string } {
  const ecdh = createECDH(CURVE);
  ecdh.generateKeys();
  const d = ecdh.getPrivateKey();
  const padded = Buffer.concat([Buffer.alloc(32 - d.length), d]);
  return { publicKey: ecdh.getPublicKey().toString('base64url'), privateKey: padded.toString('base64url') };
}

/** Strict base64url (padding tolerated): browsers and key generators write exactly this. */
export function decodeBase64url(text: string): Buffer | null {
  if (!/^[A-Za-z0-9_-]+={0,2}$/.test(text)) return null;
  return Buffer.from(text, 'base64url');
}

/** Tokens live 12 h (RFC 8292 §2: at most 24 h) and are re-signed an hour before they expire. */
const VAPID_LIFETIME_S = 12 * 3600;
const VAPID_RENEW_BEFORE_S = 3600;
/** Audiences are push-service origins (a handful); the bound only protects against odd input. */
const VAPID_CACHE_LIMIT = 256;

/** Signs and caches one VAPID Authorization value per push-service origin. */
export class VapidSigner {
  private readonly keys: VapidKeys;
  private readonly subject: string;
  private readonly now: () => number;
  private readonly cache = new Map<string, { value: string; expiresAt: number }>();

  constructor(keys: VapidKeys, subject: string, now: () => number = Date.now) {
    this.keys = keys;
    this.subject = subject;
    this.now = now;
  }

  authorization(endpoint: URL): string {
    const audience = endpoint.origin;
    const nowS = Math.floor(this.now() / 1000);
    const cached = this.cache.get(audience);
    if (cached && cached.expiresAt - nowS > VAPID_RENEW_BEFORE_S) return cached.value;
    const expiresAt = nowS + VAPID_LIFETIME_S;
    const jwt = signJwt('ES256', {}, { aud: audience, exp: expiresAt, sub: this.subject }, this.keys.privateKey);
    const value = `vapid t=${jwt}, k=${this.keys.publicKey.toString('base64url')}`;
    if (this.cache.size >= VAPID_CACHE_LIMIT) this.cache.clear();
    this.cache.set(audience, { value, expiresAt });
    return value;
  }
}
