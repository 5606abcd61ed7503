/**
 * Polls until `probe` returns a value (not undefined), or fails naming what it waited for. Tests
 * wait on events this way instead of sleeping. performance.now(), not Date: some tests move Date
 * with mock timers.
 */
export async function eventually<T>(probe: () => T | undefined | Promise<T | undefined>, what: string, timeoutMs = 30_000): Promise<T> {
  const deadline = performance.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value !== undefined) return value;
    if (performance.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
}
