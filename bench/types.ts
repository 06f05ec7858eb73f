export interface Metric {
  name: string;
  value: number;
  unit: string;
  /** The same quantity measured for the baseline in the same run. */
  baseline?: number;
  /** [min, max] over the repetitions. */
  spread?: [number, number];
  target?: { text: string; met: boolean };
}

export interface BenchContext {
  quick: boolean;
  log(msg: string): void;
}

export interface Benchmark {
  name: string;
  description: string;
  run(ctx: BenchContext): Promise<Metric[]>;
}
