/**
 * What the machine charges for waking up: the same CPU work, measured as process CPU per unit,
 * run back to back and run in bursts separated by idle gaps (a timer, so the process sleeps in
 * epoll like a server between publishes). No sockets, no I/O: any difference is the machine's
 * (cold caches and TLB after the vCPU idled or ran someone else, frequency, the hypervisor), not
 * code. Issue 13 asks that CPU per push at a low offered rate stay within 1.2× of the closed loop;
 * this says how much of that ratio the machine imposes on any program.
 *
 *   node bench/idle-penalty.ts [--units N] [--burst B] [--gaps 1,2,5,10,20] [--rounds R] [--json]
 *
 * A unit is publish-shaped work: ltx parses the bench's XEP-0357 publish, its secret is compared by
 * SHA-256, and an APNS JSON payload is built, as push-appserver does per publish. Rounds alternate
 * the gaps, and each figure is the median over rounds.
 */
import { hash } from 'node:crypto';
import { parseArgs } from 'node:util';
import { parse as parseXml } from 'ltx';
import { publishStanza } from './xmpp-peer.ts';

const { values } = parseArgs({
  options: {
    units: { type: 'string' },
    burst: { type: 'string' },
    gaps: { type: 'string' },
    rounds: { type: 'string' },
    json: { type: 'boolean' },
  },
});
const units = Number(values.units ?? 1000);
const burst = Number(values.burst ?? 5);
const gaps = (values.gaps ?? '1,2,5,10,20').split(',').map(Number);
const rounds = Number(values.rounds ?? 3);
if (![units, burst, rounds, ...gaps].every((n) => Number.isInteger(n) && n >= 0) || units < burst || burst < 1) {
  process.stderr.write('idle-penalty: --units, --burst, --rounds and --gaps must be whole numbers (units ≥ burst ≥ 1)\n');
  process.exit(2);
}

const stanzas = Array.from({ length: 64 }, (_, i) => publishStanza(`b${i}`, 'localhost', 'push.bench', { node: `node-${i}`, secret: 's'.repeat(24) }));
let sink = 0;
function unit(i: number): void {
  const iq = parseXml(stanzas[i % stanzas.length]);
  const publish = iq.getChild('pubsub')?.getChild('publish');
  const secret = iq.getChild('pubsub')?.getChild('publish-options') ? 's'.repeat(24) : '';
  sink += hash('sha256', secret).length + hash('sha256', 's'.repeat(24)).length;
  sink += JSON.stringify({ aps: { alert: { body: 'New Message' }, sound: 'default' }, node: publish?.attrs.node }).length;
}

const cpuUs = () => {
  const usage = process.cpuUsage();
  return usage.user + usage.system;
};
const pause = (gapMs: number) => new Promise<void>((resolve) => (gapMs === 0 ? setImmediate(resolve) : setTimeout(resolve, gapMs)));

/** CPU µs per unit when units come `burst` at a time with `gapMs` of idling between bursts (0: none). */
async function measure(gapMs: number): Promise<number> {
  const start = cpuUs();
  for (let done = 0; done < units; done += burst) {
    for (let i = 0; i < burst; i++) unit(done + i);
    await pause(gapMs);
  }
  return (cpuUs() - start) / units;
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

await measure(0); // warm-up: compile, tier up, size the heap
const samples = new Map<number, number[]>([[0, []], ...gaps.map((g) => [g, []] as [number, number[]])]);
for (let round = 0; round < rounds; round++) {
  for (const gap of round % 2 === 0 ? [0, ...gaps] : [...gaps, 0].reverse()) samples.get(gap)!.push(await measure(gap));
}
const continuous = median(samples.get(0)!);
const result = {
  units,
  burst,
  rounds,
  continuous_cpu_us_per_unit: Math.round(continuous * 100) / 100,
  by_gap_ms: Object.fromEntries(gaps.map((gap) => {
    const perUnit = median(samples.get(gap)!);
    return [gap, { cpu_us_per_unit: Math.round(perUnit * 100) / 100, ratio_to_continuous: Math.round((perUnit / continuous) * 100) / 100 }];
  })),
  checksum: sink % 7,
};
if (values.json) {
  process.stdout.write(`${JSON.stringify(result)}\n`);
} else {
  process.stdout.write(`the same work, ${burst} units per wake-up, median of ${rounds} alternating rounds of ${units} units\n`);
  process.stdout.write(`  back to back        ${result.continuous_cpu_us_per_unit.toFixed(2)} µs CPU per unit\n`);
  for (const gap of gaps) {
    const row = result.by_gap_ms[gap];
    process.stdout.write(`  ${String(gap).padStart(3)} ms idle between  ${row.cpu_us_per_unit.toFixed(2)} µs CPU per unit  (${row.ratio_to_continuous.toFixed(2)}×)\n`);
  }
}
