/**
 * How busy the machine is, from /proc/stat: the benchmark shares 2 cores with other
 * engineers' builds and tests, so each measurement waits (boundedly) for a quiet moment
 * and records how much CPU other processes used while it ran.
 */
import { readdirSync, readFileSync } from "node:fs";

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

/** CPU time (user + system, all threads) a process has used, in clock ticks; null when gone. */
export function processCpuTicks(pid: number): number | null {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    // Fields after the command: state is #3, utime #14, stime #15 (1-based, proc(5)).
    return Number(fields[11]) + Number(fields[12]);
  } catch {
    return null;
  }
}

/**
 * Time a process's live threads have spent on a CPU, in nanoseconds, from
 * /proc/<pid>/task/<tid>/schedstat (the scheduler's own clock); null when unreadable.
 * Unlike utime + stime it is not sampled at clock ticks: with tick accounting
 * (CONFIG_TICK_CPU_ACCOUNTING) and idle ticks stopped, a process woken from idle for a
 * short burst tends to be running when the re-armed tick fires and is charged the whole
 * tick, so utime + stime overstate the cost of work done in short bursts (a lone Check,
 * an HTTP/2 body arriving window by window). Threads that have exited are not counted.
 */
export function processRuntimeNs(pid: number): number | null {
  try {
    let total = 0;
    for (const tid of readdirSync(`/proc/${pid}/task`)) {
      try {
        total += Number(readFileSync(`/proc/${pid}/task/${tid}/schedstat`, "utf8").split(" ")[0]);
      } catch {
        // The thread exited between the listing and the read.
      }
    }
    return total;
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
