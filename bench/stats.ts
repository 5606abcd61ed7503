/**
 * Latency samples and their percentiles (nearest-rank), and a tally of errors by type.
 * Samples are kept exactly (a Float64Array grown by doubling): a run is bounded in count, so the
 * memory is known and no histogram bucketing blurs the tail.
 */

export interface Percentiles {
  p50: number | null;
  p90: number | null;
  p99: number | null;
  max: number | null;
  count: number;
}

export class Samples {
  private values = new Float64Array(1024);
  private size = 0;

  add(value: number): void {
    if (this.size === this.values.length) {
      const grown = new Float64Array(this.values.length * 2);
      grown.set(this.values);
      this.values = grown;
    }
    this.values[this.size++] = value;
  }

  get count(): number {
    return this.size;
  }

  percentiles(): Percentiles {
    if (this.size === 0) return { p50: null, p90: null, p99: null, max: null, count: 0 };
    const sorted = this.values.slice(0, this.size).sort();
    const rank = (p: number) => round3(sorted[Math.min(this.size - 1, Math.ceil((p / 100) * this.size) - 1)]);
    return { p50: rank(50), p90: rank(90), p99: rank(99), max: round3(sorted[this.size - 1]), count: this.size };
  }
}

export function round3(value: number): number {
  return Math.round(value * 1000) / 1000;
}

export function round1(value: number): number {
  return Math.round(value * 10) / 10;
}

/** Errors by type ("iq-error:wait/resource-constraint", "http-400", "timeout" …). */
export class ErrorTally {
  readonly byType = new Map<string, number>();

  add(type: string, count = 1): void {
    this.byType.set(type, (this.byType.get(type) ?? 0) + count);
  }

  get total(): number {
    let sum = 0;
    for (const n of this.byType.values()) sum += n;
    return sum;
  }

  toJSON(): Record<string, number> {
    return Object.fromEntries([...this.byType].sort(([a], [b]) => a.localeCompare(b)));
  }
}
