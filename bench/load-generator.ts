/**
 * Load generator, run as its own process so it never shares an event loop with the
 * server it measures: a closed loop of `sessions` HTTP/2 connections with `inflight`
 * unary Check calls each, a warm-up, then a measured window. Every answer is judged
 * (a denial or a wrong header swap is counted, never timed as a success), latencies are
 * taken with process.hrtime, and the server's CPU time over the window is read from
 * /proc. With `ratePerSecond` the load is open instead: calls start on a fixed schedule
 * (round-robin over the connections) whatever is still in flight, as Envoy's traffic
 * would, so a stalled server piles calls up rather than slowing the load down.
 * Usage: load-generator.ts <spec.json>; prints one JSON line (LoadResult).
 */
import { readFileSync } from "node:fs";
import { cpus } from "node:os";
import { type CallResult, GrpcH2Channel } from "./grpc-h2-client.js";
import { busyCores, type CpuSnapshot, cpuSnapshot, processCpuTicks } from "./machine-load.js";
import { quantile, round } from "./stats.js";
import { type Expectation, judge, prepareJudge, type WorkloadRequest } from "./workload.js";

export interface LoadSpec {
  readonly port: number;
  readonly sessions: number;
  readonly inflightPerSession: number;
  readonly warmupMs: number;
  readonly durationMs: number;
  /** Upper bound on measured calls (the sample buffer's size). */
  readonly maxCalls: number;
  readonly requests: readonly WorkloadRequest[];
  /** The server's pid, for its CPU time over the window; 0 to skip. */
  readonly serverPid: number;
  /** Kernel clock ticks per second (getconf CLK_TCK), for /proc/<pid>/stat. */
  readonly clockTicks: number;
  /** Open loop: start this many calls per second (inflightPerSession is then ignored). */
  readonly ratePerSecond?: number;
}

export interface LoadResult {
  readonly calls: number;
  readonly windowMs: number;
  readonly throughput: number;
  readonly latencyUs: {
    readonly p50: number;
    readonly p90: number;
    readonly p99: number;
    readonly p999: number;
    readonly max: number;
    readonly mean: number;
  };
  readonly allowed: number;
  /** OK answers whose header swap was not the expected one. */
  readonly mismatched: number;
  /** Non-OK CheckResponse statuses by code. */
  readonly denied: Readonly<Record<string, number>>;
  readonly transportErrors: number;
  /** Server CPU (user + system) per measured call, microseconds; null when not measured. */
  readonly serverCpuUsPerCall: number | null;
  /** Server CPU over the window as a fraction of one core. */
  readonly serverCpuCores: number | null;
  readonly loadGeneratorCpuCores: number;
  /** CPU used over the window by everything but the server and the load generator (other people's work). */
  readonly backgroundCpuCores: number | null;
  /** Open loop only: how late calls started against their schedule (the generator's own lag), µs. */
  readonly scheduleLagUs?: { readonly p99: number; readonly max: number };
}

/** Hard stop beyond warm-up and window: a wedged server must not hang the benchmark. */
const GRACE_MS = 10_000;

async function run(spec: LoadSpec): Promise<LoadResult> {
  const payloads = spec.requests.map((request) => Buffer.from(request.framedBase64, "base64"));
  const expectations: (Expectation | null)[] = spec.requests.map((request) => request.expect);
  if (payloads.length === 0) throw new Error("no requests in the load spec");
  prepareJudge();

  const channels: GrpcH2Channel[] = [];
  for (let i = 0; i < spec.sessions; i++) channels.push(await GrpcH2Channel.connect(spec.port));

  const samples = new Float64Array(spec.maxCalls);
  let measured = 0;
  let allowed = 0;
  let mismatched = 0;
  let transportErrors = 0;
  const denied: Record<string, number> = {};

  const started = performance.now();
  const windowStart = started + spec.warmupMs;
  const windowEnd = windowStart + spec.durationMs;
  let measuring = false;
  let stopping = false;
  let next = 0;
  let inflight = 0;
  let cpuAtStart: number | null = null;
  let ownCpuAtStart = process.cpuUsage();
  let machineAtStart: CpuSnapshot | null = null;
  let machineBusyCores: number | null = null;

  const openWindow = setTimeout(() => {
    measuring = true;
    cpuAtStart = spec.serverPid > 0 ? processCpuTicks(spec.serverPid) : null;
    ownCpuAtStart = process.cpuUsage();
    machineAtStart = cpuSnapshot();
  }, spec.warmupMs);

  let onDrained: () => void = () => undefined;
  const drained = new Promise<void>((resolve) => {
    onDrained = resolve;
  });
  let windowMs = spec.durationMs;
  let cpuTicks: number | null = null;
  let ownCpuUs = 0;
  const closeWindow = () => {
    if (stopping) return;
    stopping = true;
    measuring = false;
    windowMs = performance.now() - windowStart;
    const cpuNow = spec.serverPid > 0 ? processCpuTicks(spec.serverPid) : null;
    cpuTicks = cpuAtStart === null || cpuNow === null ? null : cpuNow - cpuAtStart;
    const own = process.cpuUsage(ownCpuAtStart);
    ownCpuUs = own.user + own.system;
    const machineNow = cpuSnapshot();
    machineBusyCores =
      machineAtStart && machineNow ? busyCores(machineAtStart, machineNow, cpus().length) : null;
  };
  const closeTimer = setTimeout(closeWindow, spec.warmupMs + spec.durationMs);

  /** Counts one answer by its verdict. */
  const tally = (result: CallResult, expect: Expectation | null): void => {
    const { verdict, code } = judge(result, expect);
    if (verdict === "allow") allowed++;
    else if (verdict === "mismatch") mismatched++;
    else if (verdict === "deny") denied[code] = (denied[code] ?? 0) + 1;
    else transportErrors++;
  };
  const issue = (channel: GrpcH2Channel) => {
    const index = next;
    next = (next + 1) % payloads.length;
    const payload = payloads[index] as Buffer;
    const expect = expectations[index] ?? null;
    const t0 = process.hrtime.bigint();
    inflight++;
    channel.call(payload, (result: CallResult) => {
      const elapsedUs = Number(process.hrtime.bigint() - t0) / 1000;
      inflight--;
      if (measuring) {
        tally(result, expect);
        samples[measured++] = elapsedUs;
        if (measured >= spec.maxCalls) closeWindow();
      }
      if (!stopping && performance.now() < windowEnd) issue(channel);
      else if (inflight === 0) onDrained();
    });
  };
  const lags: number[] = [];
  const rate = spec.ratePerSecond;
  if (rate !== undefined && rate > 0) {
    const openLoop = (result: CallResult, t0: bigint, expect: Expectation | null) => {
      const elapsedUs = Number(process.hrtime.bigint() - t0) / 1000;
      inflight--;
      if (measuring) {
        tally(result, expect);
        if (measured < spec.maxCalls) samples[measured++] = elapsedUs;
      }
      if (inflight === 0 && (stopping || performance.now() >= windowEnd)) onDrained();
    };
    const intervalMs = 1000 / rate;
    let sent = 0;
    const tick = () => {
      const now = performance.now();
      while (!stopping && now < windowEnd && started + sent * intervalMs <= now) {
        const due = started + sent * intervalMs;
        const index = next;
        next = (next + 1) % payloads.length;
        const channel = channels[sent % channels.length] as GrpcH2Channel;
        sent++;
        if (measuring) lags.push((now - due) * 1000);
        const expect = expectations[index] ?? null;
        const t0 = process.hrtime.bigint();
        inflight++;
        channel.call(payloads[index] as Buffer, (result) => openLoop(result, t0, expect));
      }
      if (!stopping && performance.now() < windowEnd) setTimeout(tick, 1);
      else if (inflight === 0) onDrained();
    };
    tick();
  } else {
    for (const channel of channels) {
      for (let i = 0; i < spec.inflightPerSession; i++) issue(channel);
    }
  }
  const hardStop = setTimeout(onDrained, spec.warmupMs + spec.durationMs + GRACE_MS);
  await drained;
  closeWindow();
  clearTimeout(openWindow);
  clearTimeout(closeTimer);
  clearTimeout(hardStop);
  for (const channel of channels) channel.close();

  const latencies = samples.subarray(0, measured).sort();
  let sum = 0;
  for (const value of latencies) sum += value;
  const windowSeconds = windowMs / 1000;
  const serverCpuSeconds = cpuTicks === null ? null : cpuTicks / spec.clockTicks;
  const serverCores = serverCpuSeconds === null ? null : serverCpuSeconds / windowSeconds;
  const ownCores = ownCpuUs / 1e6 / windowSeconds;
  return {
    calls: measured,
    windowMs: round(windowMs, 1),
    throughput: round(measured / windowSeconds, 1),
    latencyUs: {
      p50: round(quantile(latencies, 0.5), 1),
      p90: round(quantile(latencies, 0.9), 1),
      p99: round(quantile(latencies, 0.99), 1),
      p999: round(quantile(latencies, 0.999), 1),
      max: round(latencies[latencies.length - 1] ?? Number.NaN, 1),
      mean: round(measured > 0 ? sum / measured : Number.NaN, 1),
    },
    allowed,
    mismatched,
    denied,
    transportErrors,
    serverCpuUsPerCall:
      serverCpuSeconds === null || measured === 0
        ? null
        : round((serverCpuSeconds * 1e6) / measured, 2),
    serverCpuCores: serverCores === null ? null : round(serverCores, 3),
    loadGeneratorCpuCores: round(ownCores, 3),
    backgroundCpuCores:
      machineBusyCores === null || serverCores === null
        ? null
        : round(Math.max(0, machineBusyCores - serverCores - ownCores), 3),
    ...(rate === undefined
      ? {}
      : {
          scheduleLagUs: {
            p99: round(
              quantile(
                lags.sort((a, b) => a - b),
                0.99,
              ),
              1,
            ),
            max: round(lags[lags.length - 1] ?? Number.NaN, 1),
          },
        }),
  };
}

const specPath = process.argv[2];
if (specPath === undefined) {
  process.stderr.write("usage: load-generator.ts <spec.json>\n");
  process.exit(2);
}
run(JSON.parse(readFileSync(specPath, "utf8")) as LoadSpec).then(
  (result) => {
    process.stdout.write(`${JSON.stringify(result)}\n`);
    process.exit(0);
  },
  (error: unknown) => {
    process.stderr.write(`load-generator: ${(error as Error).stack ?? String(error)}\n`);
    process.exit(1);
  },
);
