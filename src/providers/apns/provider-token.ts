/**
 * The APNS provider authentication token: an ES256 JWT with header `kid` (the key id) and claims
 * `iss` (the team id) and `iat` (seconds).
 *
 * Reference: Apple, "Establishing a token-based connection to APNs": refresh the token no more than
 * once every 20 minutes and no less than once every 60 minutes; APNS answers 403
 * ExpiredProviderToken for a token older than an hour and 429 TooManyProviderTokenUpdates when a
 * new one comes too soon. So one token is cached and reused, replaced at REFRESH_AFTER_MS, and
 * never replaced before MIN_LIFETIME_MS whatever the answers say.
 */
import type { KeyObject } from 'node:crypto';
import { signJwt } from '../jwt.ts';

export const MIN_LIFETIME_MS = 20 * 60_000;
/** Halfway between Apple's bounds, leaving 20 minutes for clock skew either way. */
export const REFRESH_AFTER_MS = 40 * 60_000;

export interface ProviderToken {
  jwt: string;
  issuedAtMs: number;
}

export class ProviderTokens {
  private readonly key: KeyObject;
  private readonly keyId: string;
  private readonly teamId: string;
  private readonly now: () => number;
  private token: ProviderToken | undefined;
  /** Tokens signed so far, for health and tests. */
  issued = 0;

  constructor(options: { key: KeyObject; keyId: string; teamId: string; now?: () => number }) {
    this.key = options.key;
    this.keyId = options.keyId;
    this.teamId = options.teamId;
    this.now = options.now ?? (() => Date.now());
  }

  /** The cached token, signed anew only when none exists or it is REFRESH_AFTER_MS old. */
  current(): ProviderToken {
    const now = this.now();
    if (!this.token || now - this.token.issuedAtMs >= REFRESH_AFTER_MS) {
      this.token = this.sign(now);
    }
    return this.token;
  }

  /**
   * APNS said `rejected` expired. Returns the token to retry with, or undefined when none may be
   * made yet: the current one is younger than MIN_LIFETIME_MS (a clock problem a new token would
   * not fix, and Apple would answer TooManyProviderTokenUpdates).
   */
  replaceExpired(rejected: ProviderToken): ProviderToken | undefined {
    const current = this.current();
    // Another push already replaced it: retry with the newer one.
    if (current.jwt !== rejected.jwt) return current;
    const now = this.now();
    if (now - current.issuedAtMs < MIN_LIFETIME_MS) return undefined;
    this.token = this.sign(now);
    return this.token;
  }

  private sign(now: number): ProviderToken {
    this.issued += 1;
    const jwt = signJwt('ES256', { kid: this.keyId }, { iss: this.teamId, iat: Math.floor(now / 1000) }, this.key);
    return { jwt, issuedAtMs: now };
  }
}
