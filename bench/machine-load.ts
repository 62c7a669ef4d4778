/**
 * How busy the machine is, from /proc/stat: the benchmark shares 2 cores with other
 * engineers' builds and tests, so each measurement waits (boundedly) for a quiet moment
 * and records how much CPU other processes used while it ran.
 */
import { readFileSync } from "node:fs";

export interface CpuSnapshot {
  /** Jiffies spent busy (user, nice, system, irq, softirq, steal) over all CPUs. */
  readonly busy: number;
  /** Jiffies in total over all CPUs. */
  readonly total: number;
}

/** The aggregate `cpu` line of /proc/stat; null where /proc is not available. */
export function cpuSnapshot(): CpuSnapshot | null {
  try {
    const line = readFileSync("/proc/stat", "utf8").split("\n", 1)[0] ?? "";
    const [, ...fields] = line.trim().split(/\s+/);
    const [user, nice, system, idle, iowait, irq, softirq, steal] = fields.map(Number);
    const busy =
      (user ?? 0) + (nice ?? 0) + (system ?? 0) + (irq ?? 0) + (softirq ?? 0) + (steal ?? 0);
    return { busy, total: busy + (idle ?? 0) + (iowait ?? 0) };
  } catch {
    return null;
  }
}

/** Busy cores between two snapshots (CPU count × busy fraction). */
export function busyCores(from: CpuSnapshot, to: CpuSnapshot, cpus: number): number {
  const total = to.total - from.total;
  return total > 0 ? ((to.busy - from.busy) / total) * cpus : 0;
}

export interface QuietWait {
  readonly waitedMs: number;
  /** Busy cores over the last sample before going ahead. */
  readonly busyCores: number;
  /** False when the wait ended on its time bound with the machine still busy. */
  readonly quiet: boolean;
}

const SAMPLE_MS = 300;

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/**
 * Waits until the whole machine is using fewer than `thresholdCores` (sampled over
 * 300 ms), or `maxWaitMs` has passed.
 */
export async function waitForQuiet(
  cpus: number,
  thresholdCores: number,
  maxWaitMs: number,
): Promise<QuietWait> {
  const started = performance.now();
  let busy = 0;
  for (let attempt = 0; attempt < 1000; attempt++) {
    const before = cpuSnapshot();
    await sleep(SAMPLE_MS);
    const after = cpuSnapshot();
    if (!before || !after) return { waitedMs: 0, busyCores: 0, quiet: true };
    busy = busyCores(before, after, cpus);
    const waitedMs = performance.now() - started;
    if (busy < thresholdCores)
      return { waitedMs: Math.round(waitedMs), busyCores: busy, quiet: true };
    if (waitedMs >= maxWaitMs)
      return { waitedMs: Math.round(waitedMs), busyCores: busy, quiet: false };
  }
  return { waitedMs: Math.round(performance.now() - started), busyCores: busy, quiet: false };
}
