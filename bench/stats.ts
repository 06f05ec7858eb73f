/** Order statistics over samples; the machines are noisy, so medians and spreads, not means. */
export function quantile(samples: readonly number[], q: number): number {
  if (samples.length === 0) return NaN;
  const s = [...samples].sort((a, b) => a - b);
  const i = Math.min(s.length - 1, Math.max(0, Math.ceil(q * s.length) - 1));
  return s[i]!;
}

export const median = (s: readonly number[]) => quantile(s, 0.5);

export function summary(samples: readonly number[]): { median: number; min: number; max: number; n: number } {
  return { median: median(samples), min: Math.min(...samples), max: Math.max(...samples), n: samples.length };
}

export const round = (n: number, digits = 1) => Math.round(n * 10 ** digits) / 10 ** digits;

/** Milliseconds of each of `n` sequential calls. */
export async function timeEach(fn: () => Promise<unknown>, n: number): Promise<number[]> {
  const out: number[] = [];
  for (let i = 0; i < n; i++) {
    const t = performance.now();
    await fn();
    out.push(performance.now() - t);
  }
  return out;
}
