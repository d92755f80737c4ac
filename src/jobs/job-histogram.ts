/**
 * A histogram for observations made on every job, scraped through a prom-client Registry
 * as exactly the text and JSON a prom-client Histogram with the same name, help, labels
 * and buckets gives. prom-client's observe validates its label object and builds a key
 * string from it on every call, which showed in the worker's profile; here a caller keeps
 * the series of a label set (found by its own key once) and an observation is a bucket
 * search and three additions.
 */
import type { Metric, Registry } from 'prom-client';

export interface HistogramSeries<L extends string> {
  readonly labels: Readonly<Record<L, string>>;
  /** Observations per bucket (not cumulative); the last slot counts those above every bound. */
  readonly counts: number[];
  sum: number;
  count: number;
}

interface Value {
  labels: Record<string, string | number>;
  sharedLabels?: Record<string, string>;
  value: number;
  metricName: string;
  exemplar?: null;
}

/** What prom-client's registry reads from a metric (its MetricObjectWithValues). */
interface Exported {
  name: string;
  help: string;
  type: 'histogram';
  aggregator: 'sum';
  values: Value[];
}

export class JobHistogram<L extends string> {
  readonly type = 'histogram';
  readonly aggregator = 'sum';
  readonly #series = new Map<string, HistogramSeries<L>>();

  constructor(
    readonly name: string,
    readonly help: string,
    private readonly buckets: readonly number[],
    registry: Registry,
  ) {
    // The registry reads a metric through get()/getForPromString() and reset() only.
    registry.registerMetric(this as unknown as Metric);
  }

  /** The series of one label set under the caller's `key` for it (made on first use). */
  series(key: string, labels: () => Record<L, string>): HistogramSeries<L> {
    let s = this.#series.get(key);
    if (!s) {
      s = { labels: labels(), counts: new Array<number>(this.buckets.length + 1).fill(0), sum: 0, count: 0 };
      this.#series.set(key, s);
    }
    return s;
  }

  observe(series: HistogramSeries<L>, value: number): void {
    let i = 0;
    while (i < this.buckets.length && value > this.buckets[i]!) i++;
    series.counts[i]! += 1;
    series.sum += value;
    series.count += 1;
  }

  allSeries(): IterableIterator<HistogramSeries<L>> {
    return this.#series.values();
  }

  /** As prom-client's Histogram: bucket lines with `le` first and the series' labels shared. */
  getForPromString(): Exported {
    const values: Value[] = [];
    const bucketName = `${this.name}_bucket`;
    for (const s of this.#series.values()) {
      let acc = 0;
      this.buckets.forEach((le, i) => {
        acc += s.counts[i]!;
        values.push({ labels: { le }, sharedLabels: s.labels, value: acc, metricName: bucketName, exemplar: null });
      });
      values.push(
        { labels: { le: '+Inf' }, sharedLabels: s.labels, value: s.count, metricName: bucketName, exemplar: null },
        { labels: {}, sharedLabels: s.labels, value: s.sum, metricName: `${this.name}_sum`, exemplar: undefined },
        { labels: {}, sharedLabels: s.labels, value: s.count, metricName: `${this.name}_count`, exemplar: undefined },
      );
    }
    return { name: this.name, help: this.help, type: this.type, values, aggregator: this.aggregator };
  }

  /** As prom-client's Histogram: each value's own labels with the series' labels merged in. */
  get(): Exported {
    const data = this.getForPromString();
    return {
      ...data,
      values: data.values.map(({ sharedLabels, labels, ...rest }) => ({ ...rest, labels: { ...labels, ...sharedLabels } })),
    };
  }

  reset(): void {
    this.#series.clear();
  }
}
