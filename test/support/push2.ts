/**
 * Push 2.0 test material made with node:crypto directly (not our src/): a client's JWT key pair in
 * the spellings mod_push2 and our registration take, ES256 JWTs with any claims, a user agent's
 * RFC 8291 key pair and auth secret, and hand-made `<notification xmlns='urn:xmpp:push2:0'>`
 * messages (as a user's server sends them) for the refusal cases mod_push2 cannot produce.
 */
import { createECDH, generateKeyPairSync, randomBytes, sign, type KeyObject } from 'node:crypto';
import { xml } from '@xmpp/client';
import type { Element } from 'ltx';

export interface JwtKeyPair {
  privateKey: KeyObject;
  /** The raw 65-byte point. */
  publicRaw: Buffer;
  /** base64 (standard, padded) of the point: the notification's `key` attribute, `push2_key`. */
  publicBase64: string;
  /** One line of base64 PKCS#8 DER: the `<jwt-key>` of the Push 2.0 <enable/>. */
  pkcs8Base64: string;
}

export function jwtKeyPair(): JwtKeyPair {
  const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const jwk = publicKey.export({ format: 'jwk' });
  const publicRaw = Buffer.concat([Buffer.from([4]), Buffer.from(jwk.x!, 'base64url'), Buffer.from(jwk.y!, 'base64url')]);
  return {
    privateKey,
    publicRaw,
    publicBase64: publicRaw.toString('base64'),
    pkcs8Base64: (privateKey.export({ format: 'der', type: 'pkcs8' }) as Buffer).toString('base64'),
  };
}

const b64url = (value: Buffer | string) => Buffer.from(value).toString('base64url');

export function es256Jwt(key: KeyObject, claims: Record<string, unknown>, header: Record<string, unknown> = { alg: 'ES256', typ: 'JWT' }): string {
  const input = `${b64url(JSON.stringify(header))}.${b64url(JSON.stringify(claims))}`;
  return `${input}.${b64url(sign('sha256', Buffer.from(input), { key, dsaEncoding: 'ieee-p1363' }))}`;
}

/** Claims as mod_push2 makes them: aud, sub, iat, exp = iat + 3600 (seconds). */
export function push2Claims(aud: string, nowMs = Date.now(), overrides: Record<string, unknown> = {}): Record<string, unknown> {
  const iat = Math.floor(nowMs / 1000);
  return { aud, sub: 'mailto:ops@example.test', iat, exp: iat + 3600, ...overrides };
}

export interface UserAgentKeys {
  privateKey: Buffer;
  publicKey: Buffer;
  authSecret: Buffer;
}

export function userAgentKeys(): UserAgentKeys {
  const ecdh = createECDH('prime256v1');
  ecdh.generateKeys();
  return { privateKey: ecdh.getPrivateKey(), publicKey: ecdh.getPublicKey(), authSecret: randomBytes(16) };
}

export interface NotificationParts {
  to?: string;
  client?: string;
  priority?: string;
  voip?: boolean;
  /** base64 text of <payload>; null leaves <encrypted> out. */
  payload?: string | null;
  jwt?: { token: string; key: string } | null;
  id?: string;
}

/** `<message><notification xmlns='urn:xmpp:push2:0'>…` as mod_push2 shapes it. */
export function push2Message(parts: NotificationParts): Element {
  const children: Element[] = [];
  if (parts.client !== undefined) children.push(xml('client', {}, parts.client));
  if (parts.priority !== undefined) children.push(xml('priority', {}, parts.priority));
  if (parts.voip) children.push(xml('voip'));
  if (parts.payload !== null && parts.payload !== undefined) {
    children.push(xml('encrypted', { xmlns: 'urn:xmpp:sce:rfc8291:0' }, xml('payload', {}, parts.payload)));
  }
  if (parts.jwt) children.push(xml('jwt', { key: parts.jwt.key }, parts.jwt.token));
  return xml('message', { to: parts.to ?? 'push.localhost', id: parts.id ?? `n-${Math.random().toString(36).slice(2)}` },
    xml('notification', { xmlns: 'urn:xmpp:push2:0' }, ...children));
}
