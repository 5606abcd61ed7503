/**
 * Verifying the JWT a Push 2.0 publisher signs (RFC 8292 style, ES256, RFC 7515/7518): the raw
 * P-256 public key comes with the notification, so verification proves only that the publisher
 * holds the key; what makes it authentication is that the key is the one pinned for the client
 * (core/push2.ts). node:crypto only.
 */
import { createPublicKey, verify, type KeyObject } from 'node:crypto';

/** An uncompressed P-256 point: 0x04 || X || Y. */
export const P256_POINT_BYTES = 65;

/** RFC 8292 §2: an `exp` more than 24 hours ahead is refused. */
export const MAX_EXPIRY_AHEAD_S = 24 * 3600;

/** base64 or base64url, padded or not; null when the text is neither. */
export function decodeBase64Any(text: string): Buffer | null {
  const trimmed = text.trim();
  if (trimmed === '' || !/^[A-Za-z0-9+/_-]+={0,2}$/.test(trimmed)) return null;
  const decoded = Buffer.from(trimmed.replace(/-/g, '+').replace(/_/g, '/'), 'base64');
  // Buffer.from ignores trailing garbage bits; a round trip rejects non-canonical lengths (e.g. 1 char).
  const unpadded = trimmed.replace(/=+$/, '');
  return decoded.toString('base64url') === unpadded.replace(/\+/g, '-').replace(/\//g, '_') ? decoded : null;
}

/** The key object for a raw P-256 point, or null when the bytes are not a point on the curve. */
export function p256KeyOf(point: Buffer): KeyObject | null {
  if (point.length !== P256_POINT_BYTES || point[0] !== 4) return null;
  try {
    return createPublicKey({
      key: { kty: 'EC', crv: 'P-256', x: point.subarray(1, 33).toString('base64url'), y: point.subarray(33).toString('base64url') },
      format: 'jwk',
    });
  } catch {
    return null;
  }
}

/**
 * A client's JWT public key as registrations and notifications spell it (base64 or base64url of the
 * 65-byte point) → its canonical form (base64url, unpadded), or null when it is not a P-256 point.
 */
export function canonicalP256Key(text: string): string | null {
  const bytes = decodeBase64Any(text);
  return bytes && p256KeyOf(bytes) ? bytes.toString('base64url') : null;
}

export interface JwtExpectations {
  /** Accepted `aud` values (exact match). */
  audiences: readonly string[];
  nowMs: number;
  /** Tolerated clock difference for `exp` and `iat`, in seconds. */
  skewS: number;
}

export interface JwtClaims {
  aud: string;
  exp: number;
  iat?: number;
  sub?: string;
}

export type JwtVerdict = { ok: true; claims: JwtClaims } | { ok: false; reason: string };

function jsonSegment(segment: string): Record<string, unknown> | null {
  if (!/^[A-Za-z0-9_-]*$/.test(segment)) return null;
  try {
    const value: unknown = JSON.parse(Buffer.from(segment, 'base64url').toString('utf8'));
    return typeof value === 'object' && value !== null && !Array.isArray(value) ? value as Record<string, unknown> : null;
  } catch {
    return null;
  }
}

/** Compact JWS, ES256 only (no `none`, no HMAC: the key attribute is public). */
export function verifyEs256Jwt(token: string, key: KeyObject, expect: JwtExpectations): JwtVerdict {
  const parts = token.trim().split('.');
  if (parts.length !== 3) return { ok: false, reason: 'the JWT is not three dot-separated parts' };
  const [headerPart, claimsPart, signaturePart] = parts;
  const header = jsonSegment(headerPart);
  if (!header) return { ok: false, reason: 'the JWT header is not base64url JSON' };
  if (header.alg !== 'ES256') return { ok: false, reason: `the JWT alg must be ES256, got ${JSON.stringify(header.alg)}` };
  const signature = /^[A-Za-z0-9_-]+$/.test(signaturePart) ? Buffer.from(signaturePart, 'base64url') : Buffer.alloc(0);
  if (signature.length !== 64) return { ok: false, reason: 'the JWT signature is not a 64-byte ES256 signature' };
  if (!verify('sha256', Buffer.from(`${headerPart}.${claimsPart}`), { key, dsaEncoding: 'ieee-p1363' }, signature)) {
    return { ok: false, reason: 'the JWT signature does not verify with the key' };
  }
  const claims = jsonSegment(claimsPart);
  if (!claims) return { ok: false, reason: 'the JWT claims are not base64url JSON' };
  const { aud, exp, iat, sub } = claims;
  if (typeof aud !== 'string' || !expect.audiences.includes(aud)) {
    return { ok: false, reason: `the JWT aud ${JSON.stringify(aud)} is not this push service (${expect.audiences.join(', ')})` };
  }
  const nowS = Math.floor(expect.nowMs / 1000);
  if (typeof exp !== 'number' || !Number.isFinite(exp)) return { ok: false, reason: 'the JWT has no numeric exp' };
  if (exp + expect.skewS <= nowS) return { ok: false, reason: 'the JWT has expired' };
  if (exp > nowS + MAX_EXPIRY_AHEAD_S + expect.skewS) return { ok: false, reason: 'the JWT exp is more than 24 hours ahead' };
  if (iat !== undefined && (typeof iat !== 'number' || iat > nowS + expect.skewS)) return { ok: false, reason: 'the JWT iat is in the future' };
  return { ok: true, claims: { aud, exp, iat: iat as number | undefined, sub: typeof sub === 'string' ? sub : undefined } };
}
