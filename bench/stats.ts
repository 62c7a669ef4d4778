/**
 * Small statistics helpers for the benchmark: percentiles over latency samples and the
 * median of repeated runs (2 shared cores are noisy, so every figure is a median).
 */

/** The q-quantile (0..1) of `sorted` (ascending), nearest-rank; NaN when empty. */
export function quantile(sorted: ArrayLike<number>, q: number): number {
  if (sorted.length === 0) return Number.NaN;
  const rank = Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1));
  return sorted[rank] ?? Number.NaN;
}

/** Median of a few numbers (the mean of the middle two for an even count). */
export function median(values: readonly number[]): number {
  if (values.length === 0) return Number.NaN;
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  const upper = sorted[mid] ?? Number.NaN;
  if (sorted.length % 2 === 1) return upper;
  return ((sorted[mid - 1] ?? Number.NaN) + upper) / 2;
}

/** Rounds for display and JSON: `digits` decimals. */
export function round(value: number, digits = 2): number {
  const factor = 10 ** digits;
  return Math.round(value * factor) / factor;
}

/** Other processes' CPU above which a run counts as disturbed (the machine has 2 cores). */
export const DISTURBED_CORES = 0.3;

/**
 * The runs to take medians over: those during which other processes used under
 * DISTURBED_CORES, or every run when none was that quiet.
 */
export function quietRuns<T extends { readonly backgroundCpuCores: number | null }>(
  runs: readonly T[],
): T[] {
  const quiet = runs.filter(
    (run) => run.backgroundCpuCores !== null && run.backgroundCpuCores < DISTURBED_CORES,
  );
  return quiet.length > 0 ? quiet : [...runs];
}
