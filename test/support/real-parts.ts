/**
 * Integration tests use real parts (Prosody, …). A missing part is a FAILURE with a message saying
 * how to install it, never a silent skip: a green run must mean the behaviour was tested.
 *
 * The one way out is explicit, for a quick local run: PUSH_APPSERVER_TEST_SKIP_INTEGRATION=1 skips
 * the integration tests and says loudly, on stderr, what was not tested. Under CI=true the opt-out
 * is ignored (and says so): CI never skips.
 */
import { basename } from 'node:path';

export const SKIP_INTEGRATION_ENV = 'PUSH_APPSERVER_TEST_SKIP_INTEGRATION';

const announced = new Set<string>();

function shout(message: string): void {
  if (announced.has(message)) return;
  announced.add(message);
  const bar = '!'.repeat(78);
  process.stderr.write(`\n${bar}\n${message}\n${bar}\n\n`);
}

/** True in CI (CI=true, as .ci/run exports; also any other non-empty CI value except false/0). */
export function runningInCi(): boolean {
  const ci = process.env.CI;
  return ci !== undefined && ci !== '' && ci !== 'false' && ci !== '0';
}

/**
 * For `describe(..., { skip: integrationSkipped('Prosody') })`: false (run, and fail if the part is
 * missing) unless the developer opted out; then the skip reason, after printing what is skipped.
 */
export function integrationSkipped(parts: string): string | false {
  if (process.env[SKIP_INTEGRATION_ENV] !== '1') return false;
  const file = basename(process.argv[1] ?? 'this test file');
  if (runningInCi()) {
    shout(`${SKIP_INTEGRATION_ENV}=1 is IGNORED under CI: ${file} runs its integration tests (${parts}).`);
    return false;
  }
  shout(`SKIPPED (${SKIP_INTEGRATION_ENV}=1): the integration tests in ${file} did NOT run.\n` +
    `Nothing that needs ${parts} was tested. Unset ${SKIP_INTEGRATION_ENV} for a run that proves anything.`);
  return `${SKIP_INTEGRATION_ENV}=1: integration tests that need ${parts} not run`;
}

/** Throws the failure a test sees when a real part is not installed. */
export function missingPart(part: string, install: string): Error {
  return new Error(`${part} is not installed, so this integration test cannot run: ${install}\n` +
    `(For a quick local run without integration tests: ${SKIP_INTEGRATION_ENV}=1 npm test. It never counts as a pass.)`);
}
