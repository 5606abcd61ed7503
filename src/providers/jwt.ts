/**
 * Compact JWS (RFC 7515) signing for the providers' auth tokens: ES256 for APNS and VAPID, RS256
 * for Google's service-account assertion. node:crypto only; ES256 signatures are raw r||s (RFC 7518 §3.4).
 */
import { createPrivateKey, sign, type KeyObject } from 'node:crypto';

export type JwtAlgorithm = 'ES256' | 'RS256';

export function base64url(input: Buffer | string): string {
  return Buffer.from(input).toString('base64url');
}

export function signJwt(algorithm: JwtAlgorithm, header: Record<string, unknown>, claims: Record<string, unknown>, key: KeyObject): string {
  const signingInput = `${base64url(JSON.stringify({ alg: algorithm, typ: 'JWT', ...header }))}.${base64url(JSON.stringify(claims))}`;
  const signature = algorithm === 'ES256'
    ? sign('sha256', Buffer.from(signingInput), { key, dsaEncoding: 'ieee-p1363' })
    : sign('sha256', Buffer.from(signingInput), key);
  return `${signingInput}.${base64url(signature)}`;
}

/** Loads a PEM private key (PKCS#8 .p8, SEC1 or PKCS#1), with an optional passphrase. */
export function loadPrivateKey(pem: string | Buffer, passphrase?: string): KeyObject {
  return createPrivateKey({ key: pem, format: 'pem', passphrase });
}
