/** Temp directories for tests, removed when the test process exits (keys, CAs, configs). */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const created: string[] = [];
let hooked = false;

export function testTempDir(prefix: string): string {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  created.push(dir);
  if (!hooked) {
    hooked = true;
    process.once('exit', () => {
      for (const path of created) rmSync(path, { recursive: true, force: true });
    });
  }
  return dir;
}
