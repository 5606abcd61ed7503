/**
 * The push phase: M publishes to random registered nodes, either closed loop (C in flight: a new
 * publish leaves as soon as an answer arrives) or at a fixed offered rate (open loop: publishes leave
 * on schedule whatever the answers do). The first `warmup` publishes are sent the same way but not
 * counted. Latency is measured from the write of the publish to the arrival of its iq reply.
 */
import type { PublishRoute, PublishTarget } from './xmpp-peer.ts';
import { ErrorTally, Samples } from './stats.ts';

export interface PushTargets {
  count: number;
  /** The node and secret of target i, and its provider token (to match the mock's receipts). */
  get(index: number): PublishTarget & { token: string };
}

export interface PushPhaseOptions {
  peer: PublishRoute;
  targets: PushTargets;
  pushes: number;
  warmup: number;
  concurrency: number;
  /** Offered publishes per second; undefined = closed loop. */
  rate: number | undefined;
  deadline: number;
  /** Called as each publish is written, with a monotonic clock shared with the mock provider. */
  onSent?: (index: number, token: string, monotonicMs: number) => void;
  /** Called just before the first counted publish leaves (to sample the server's CPU there). */
  onCountingStarts?: () => void;
  /** Called as each answer arrives; `error` is `iq-error:<type>/<condition>` for an error. */
  onAnswered?: (index: number, ok: boolean, error: string | undefined) => void;
  /** Fault mode: a `wait` error is an accepted push (to be retried by the server), not an error. */
  waitIsAccepted?: boolean;
}

export interface PushPhaseResult {
  sent: number;
  completed: number;
  timedCompleted: number;
  elapsedS: number;
  perSecond: number;
  offeredPerSecond: number | null;
  latency: Samples;
  errors: ErrorTally;
  errorSamples: Map<string, string>;
  /** Per publish: ms since the phase started when it was sent, and its latency (NaN: no reply). */
  timeline: { startedAtEpochMs: number; sentAtMs: Float64Array; latencyMs: Float64Array };
  /** Publishes to a node that already had one in flight (the server coalesces those). */
  sharedNode: number;
  /** Publishes answered with a `wait` error (counted as errors unless waitIsAccepted). */
  waits: number;
}

/** A clock shared by every process on the machine (CLOCK_MONOTONIC), in ms, cheap to read. */
const monotonicOffset = Number(process.hrtime.bigint()) / 1e6 - performance.now();
export function monotonicMs(): number {
  return performance.now() + monotonicOffset;
}

export async function runPushPhase(options: PushPhaseOptions): Promise<PushPhaseResult> {
  const { peer, targets } = options;
  const total = options.warmup + options.pushes;
  const sentAt = new Float64Array(total);
  const targetOf = new Int32Array(total);
  const answered = new Uint8Array(total);
  const latencies = new Float64Array(total).fill(NaN);
  // How many publishes are in flight per target, so concurrent publishes mostly hit distinct nodes.
  const busy = new Uint16Array(targets.count);
  const latency = new Samples();
  const errors = new ErrorTally();
  const errorSamples = new Map<string, string>();
  let sent = 0;
  let completed = 0;
  let timedCompleted = 0;
  let timedStart = 0;
  let timedEnd = 0;
  let sharedNode = 0;
  let waits = 0;

  const pickTarget = (): number => {
    let index = 0;
    for (let attempt = 0; attempt < 8; attempt++) {
      index = Math.floor(Math.random() * targets.count);
      if (busy[index] === 0) return index;
    }
    sharedNode += 1;
    return index;
  };

  const sendOne = (): void => {
    const index = sent++;
    const target = pickTarget();
    busy[target] += 1;
    targetOf[index] = target;
    const { node, secret, token } = targets.get(target);
    if (index === options.warmup) options.onCountingStarts?.();
    const now = performance.now();
    sentAt[index] = now;
    if (index === options.warmup) timedStart = now;
    peer.publish(`b${index}`, { node, secret });
    options.onSent?.(index, token, now + monotonicOffset);
  };

  let finish: () => void = () => {};
  const done = new Promise<void>((resolve) => { finish = resolve; });
  const maybeDone = () => {
    if (completed === total) finish();
  };

  peer.onReply = (reply) => {
    const now = performance.now();
    const index = reply.id.charCodeAt(0) === 98 /* b */ ? Number(reply.id.slice(1)) : NaN;
    if (!(index >= 0 && index < sent) || answered[index] === 1) {
      errors.add('unexpected-reply');
      return;
    }
    answered[index] = 1;
    busy[targetOf[index]] -= 1;
    latencies[index] = now - sentAt[index];
    completed += 1;
    if (!reply.ok) {
      const type = reply.error ?? 'iq-error';
      const wait = type.startsWith('iq-error:wait/');
      if (wait) waits += 1;
      if (!(wait && options.waitIsAccepted)) {
        errors.add(type);
        if (!errorSamples.has(type)) errorSamples.set(type, reply.text ?? '');
      }
    }
    options.onAnswered?.(index, reply.ok, reply.error);
    if (index >= options.warmup) {
      latency.add(now - sentAt[index]);
      timedCompleted += 1;
      timedEnd = now;
    }
    if (options.rate === undefined && sent < total) sendOne();
    maybeDone();
  };
  peer.onClose = (reason) => {
    errors.add('component-disconnected');
    errorSamples.set('component-disconnected', reason);
    finish();
  };

  let rateTimer: NodeJS.Timeout | undefined;
  const started = performance.now();
  if (options.rate === undefined) {
    const initial = Math.min(options.concurrency, total);
    for (let i = 0; i < initial; i++) sendOne();
  } else {
    const perMs = options.rate / 1000;
    // Publishes leave on schedule: each tick sends what the clock says is due (a timer, not a busy
    // loop, so the generator leaves the CPU to the server between ticks).
    const tick = () => {
      const due = Math.min(total, Math.floor((performance.now() - started) * perMs) + 1);
      while (sent < due) sendOne();
      if (sent < total) rateTimer = setTimeout(tick, 1);
    };
    tick();
  }

  const remaining = options.deadline - Date.now();
  const deadlineTimer = setTimeout(finish, Math.max(0, remaining));
  await done;
  clearTimeout(deadlineTimer);
  clearTimeout(rateTimer);
  peer.onReply = () => {};
  peer.onClose = () => {};

  const unanswered = sent - completed;
  if (unanswered > 0) errors.add('no-reply-before-deadline', unanswered);
  if (sent < total) errors.add('not-sent-before-deadline', total - sent);
  const elapsedS = timedCompleted > 0 ? (timedEnd - timedStart) / 1000 : 0;
  return {
    sent,
    completed,
    timedCompleted,
    elapsedS,
    perSecond: elapsedS > 0 ? timedCompleted / elapsedS : 0,
    offeredPerSecond: options.rate ?? null,
    latency,
    errors,
    errorSamples,
    timeline: { startedAtEpochMs: performance.timeOrigin + started, sentAtMs: sentAt.map((at) => at - started), latencyMs: latencies },
    sharedNode,
    waits,
  };
}
