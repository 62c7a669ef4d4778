/**
 * CPU time of another process, read from /proc/<pid>/stat (utime + stime), for tests that
 * bound what a request costs the server in CPU rather than wall time, so that a loaded
 * machine cannot make them flaky.
 */
import { execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";

let ticksPerSecond: number | undefined;

/** Kernel clock ticks per second (USER_HZ), the unit of /proc/<pid>/stat CPU times. */
export function clockTicksPerSecond(): number {
  if (ticksPerSecond === undefined) {
    const text = execFileSync("getconf", ["CLK_TCK"], { encoding: "utf8" }).trim();
    const parsed = Number(text);
    ticksPerSecond = Number.isFinite(parsed) && parsed > 0 ? parsed : 100;
  }
  return ticksPerSecond;
}

/**
 * User plus system CPU time the process has used so far, in milliseconds.
 * @throws Error when the process is gone or /proc is unreadable.
 */
export function processCpuMs(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  // The command name (field 2) is in parentheses and may hold spaces: split after it.
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  // Fields 14 and 15 (utime, stime) are at 11 and 12 once pid and comm are gone.
  const ticks = Number(fields[11]) + Number(fields[12]);
  if (!Number.isFinite(ticks)) throw new Error(`cannot read CPU times from /proc/${pid}/stat`);
  return (ticks * 1000) / clockTicksPerSecond();
}
