/** Secrets and nodes (DESIGN §5): 256-bit random secrets, compared in constant time. */
import { hash, randomBytes, randomUUID, timingSafeEqual } from 'node:crypto';

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
  // One-shot hash(): no Hash object per call (this runs for every publish).
  return timingSafeEqual(hash('sha256', expected, 'buffer'), hash('sha256', given, 'buffer'));
}
