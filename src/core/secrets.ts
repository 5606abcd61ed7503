/** Secrets and nodes (DESIGN §5): 256-bit random secrets, compared in constant time. */
import { randomBytes, randomUUID, timingSafeEqual, createHash } from 'node:crypto';

export function newSecret(): string {
  return randomBytes(32).toString('hex');
}

export function newNode(): string {
  return randomUUID();
}

/**
 * Constant-time for equal lengths; hashing first makes the comparison independent of where the
 * strings differ and of their lengths, so a wrong secret leaks nothing through timing.
 */
export function secretsEqual(expected: string, given: string): boolean {
  const a = createHash('sha256').update(expected).digest();
  const b = createHash('sha256').update(given).digest();
  return timingSafeEqual(a, b);
}
