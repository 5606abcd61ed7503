/**
 * What a `--profile DIR` run spent its CPU on, in the counted part of the push phase only:
 *
 *   node bench/profile-summary.ts DIR [--top N] [--per-push]
 *
 * Reads every `.cpuprofile` in DIR (V8's format: nodes, samples, timeDeltas in µs; the main thread
 * and each worker write their own) and `push-phase.json`, which run.ts writes there with the
 * CLOCK_MONOTONIC µs of the first counted publish and the last answer (V8 stamps samples on the same
 * clock). Prints, per profile, self time by function and by origin (our src/, node: internals, ltx,
 * GC, …) and inclusive time of the heaviest frames; `--per-push` also divides by counted publishes.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';

interface CallFrame { functionName: string; url: string; lineNumber: number }
interface ProfileNode { id: number; callFrame: CallFrame; children?: number[] }
interface Profile { nodes: ProfileNode[]; startTime: number; endTime: number; samples: number[]; timeDeltas: number[] }

const { values, positionals } = parseArgs({ allowPositionals: true, options: { top: { type: 'string' }, 'per-push': { type: 'boolean' } } });
const dir = positionals[0];
if (!dir) throw new Error('usage: profile-summary.ts DIR [--top N] [--per-push]');
const top = Number(values.top ?? 30);
const phase = JSON.parse(readFileSync(join(dir, 'push-phase.json'), 'utf8')) as { startUs: number; endUs: number; pushes: number };

function origin(frame: CallFrame): string {
  const { url, functionName } = frame;
  if (url === '') return functionName.startsWith('(') ? functionName : `(native) ${functionName}`;
  if (url.includes('/node_modules/ltx/')) return 'ltx';
  if (url.includes('/src/')) return `src/${url.slice(url.lastIndexOf('/src/') + 5).split('/')[0]}`;
  if (url.startsWith('node:')) return url;
  return url.slice(url.lastIndexOf('/') + 1);
}

function label(frame: CallFrame): string {
  const file = frame.url === '' ? '' : frame.url.slice(frame.url.lastIndexOf('/') + 1);
  return `${frame.functionName || '(anonymous)'} ${file}${file ? `:${frame.lineNumber + 1}` : ''}`;
}

const ms = (us: number) => (us / 1000).toFixed(1).padStart(8);

for (const file of readdirSync(dir).filter((f) => f.endsWith('.cpuprofile')).sort()) {
  const profile = JSON.parse(readFileSync(join(dir, file), 'utf8')) as Profile;
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  const parent = new Map<number, number>();
  for (const n of profile.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
  const self = new Map<string, number>();
  const byOrigin = new Map<string, number>();
  const inclusive = new Map<string, number>();
  let t = profile.startTime;
  let total = 0;
  let idle = 0;
  for (let i = 0; i < profile.samples.length; i++) {
    t += profile.timeDeltas[i];
    // A sample's delta is the time since the previous one: attribute it to this sample.
    const dt = profile.timeDeltas[i + 1] ?? 0;
    if (t < phase.startUs || t > phase.endUs) continue;
    const node = byId.get(profile.samples[i])!;
    if (node.callFrame.functionName === '(idle)') { idle += dt; continue; }
    total += dt;
    self.set(label(node.callFrame), (self.get(label(node.callFrame)) ?? 0) + dt);
    byOrigin.set(origin(node.callFrame), (byOrigin.get(origin(node.callFrame)) ?? 0) + dt);
    const seen = new Set<string>();
    for (let id: number | undefined = node.id; id !== undefined; id = parent.get(id)) {
      const name = label(byId.get(id)!.callFrame);
      if (seen.has(name)) continue;
      seen.add(name);
      inclusive.set(name, (inclusive.get(name) ?? 0) + dt);
    }
  }
  const perPush = values['per-push'] && phase.pushes > 0 ? (us: number) => `  ${(us / phase.pushes).toFixed(2).padStart(7)} µs/push` : () => '';
  const sorted = (m: Map<string, number>) => [...m].sort((a, b) => b[1] - a[1]).slice(0, top);
  process.stdout.write(`\n== ${file}: ${ms(total)} ms busy, ${ms(idle)} ms idle in the counted push phase (${phase.pushes} publishes)${perPush(total)}\n`);
  process.stdout.write('-- self time by origin\n');
  for (const [name, us] of sorted(byOrigin)) process.stdout.write(`${ms(us)} ms ${((100 * us) / total).toFixed(1).padStart(5)} %${perPush(us)}  ${name}\n`);
  process.stdout.write('-- self time by function\n');
  for (const [name, us] of sorted(self)) process.stdout.write(`${ms(us)} ms ${((100 * us) / total).toFixed(1).padStart(5)} %${perPush(us)}  ${name}\n`);
  process.stdout.write('-- inclusive time\n');
  for (const [name, us] of sorted(inclusive)) process.stdout.write(`${ms(us)} ms ${((100 * us) / total).toFixed(1).padStart(5)} %${perPush(us)}  ${name}\n`);
}
