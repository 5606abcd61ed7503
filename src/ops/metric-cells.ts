/**
 * Counters and histograms for the hot path, exposed through a prom-client Registry (which writes
 * the text format). prom-client's own `labels(...).inc()` hashes and validates the label set on
 * every call (~1-2 µs each, several per push); here each label set is one cell made on first use,
 * and a push only adds to numbers in it. prom-client reads the cells when Prometheus scrapes.
 */
import type { Metric, Registry } from 'prom-client';

type Labels = Record<string, string>;

interface Sample {
  labels: Labels;
  value: number;
  metricName?: string;
}

/** Nested Maps by label value: no label object or key string is built per call. */
class CellTree<C> {
  private readonly root = new Map<string, any>();
  readonly cells: Array<{ labels: Labels; cell: C }> = [];
  private readonly names: readonly string[];
  private readonly make: () => C;

  constructor(names: readonly string[], make: () => C) {
    this.names = names;
    this.make = make;
  }

  get(a: string, b?: string, c?: string): C {
    if (b === undefined) return this.root.get(a) ?? this.add(this.root, a, [a]);
    const second = this.branch(this.root, a);
    if (c === undefined) return second.get(b) ?? this.add(second, b, [a, b]);
    const third = this.branch(second, b);
    return third.get(c) ?? this.add(third, c, [a, b, c]);
  }

  private branch(level: Map<string, any>, key: string): Map<string, any> {
    let next = level.get(key);
    if (next === undefined) {
      next = new Map();
      level.set(key, next);
    }
    return next;
  }

  private add(level: Map<string, any>, key: string, values: string[]): C {
    const cell = this.make();
    level.set(key, cell);
    this.cells.push({ labels: Object.fromEntries(this.names.map((name, i) => [name, values[i]])), cell });
    return cell;
  }
}

export interface CounterCell {
  value: number;
}

export class FastCounter {
  readonly name: string;
  readonly help: string;
  readonly type = 'counter';
  readonly aggregator = 'sum';
  private readonly tree: CellTree<CounterCell>;

  constructor(registry: Registry, options: { name: string; help: string; labelNames: readonly string[] }) {
    this.name = options.name;
    this.help = options.help;
    this.tree = new CellTree(options.labelNames, () => ({ value: 0 }));
    registry.registerMetric(this as unknown as Metric);
  }

  /** The cell of one label set; keep it, or call this per event (a few Map lookups). */
  cell(a: string, b?: string, c?: string): CounterCell {
    return this.tree.get(a, b, c);
  }

  async get(): Promise<{ name: string; help: string; type: string; aggregator: string; values: Sample[] }> {
    return { name: this.name, help: this.help, type: this.type, aggregator: this.aggregator, values: this.tree.cells.map(({ labels, cell }) => ({ labels, value: cell.value })) };
  }

  reset(): void {
    for (const { cell } of this.tree.cells) cell.value = 0;
  }
}

export interface HistogramCell {
  /** Per bucket (not cumulative); the last one is +Inf. */
  counts: Float64Array;
  sum: number;
  count: number;
}

export class FastHistogram {
  readonly name: string;
  readonly help: string;
  readonly type = 'histogram';
  readonly aggregator = 'sum';
  private readonly bounds: readonly number[];
  private readonly tree: CellTree<HistogramCell>;

  constructor(registry: Registry, options: { name: string; help: string; labelNames: readonly string[]; buckets: readonly number[] }) {
    this.name = options.name;
    this.help = options.help;
    this.bounds = [...options.buckets].sort((a, b) => a - b);
    const size = this.bounds.length + 1;
    this.tree = new CellTree(options.labelNames, () => ({ counts: new Float64Array(size), sum: 0, count: 0 }));
    registry.registerMetric(this as unknown as Metric);
  }

  observe(cell: HistogramCell, value: number): void {
    const bounds = this.bounds;
    let i = 0;
    while (i < bounds.length && value > bounds[i]) i++;
    cell.counts[i] += 1;
    cell.sum += value;
    cell.count += 1;
  }

  cell(a: string, b?: string, c?: string): HistogramCell {
    return this.tree.get(a, b, c);
  }

  async get(): Promise<{ name: string; help: string; type: string; aggregator: string; values: Sample[] }> {
    const values: Sample[] = [];
    for (const { labels, cell } of this.tree.cells) {
      let cumulative = 0;
      for (let i = 0; i <= this.bounds.length; i++) {
        cumulative += cell.counts[i];
        values.push({ labels: { le: i < this.bounds.length ? String(this.bounds[i]) : '+Inf', ...labels }, value: cumulative, metricName: `${this.name}_bucket` });
      }
      values.push({ labels, value: cell.sum, metricName: `${this.name}_sum` });
      values.push({ labels, value: cell.count, metricName: `${this.name}_count` });
    }
    return { name: this.name, help: this.help, type: this.type, aggregator: this.aggregator, values };
  }

  reset(): void {
    for (const { cell } of this.tree.cells) {
      cell.counts.fill(0);
      cell.sum = 0;
      cell.count = 0;
    }
  }
}
