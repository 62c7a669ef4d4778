/**
 * Section "keystore scale": at each size (10, 10 000, 100 000 clients, one token each) a
 * real `keygate serve` child on a new database, measured only from outside, as an
 * operator sees it: spawn to ready (start-up and the initial sync), Check latency over
 * gRPC against the loaded keystore, the time from saving a file that revokes a token to
 * that token being denied, the longest Check meanwhile, and resident memory. Nothing here
 * imports the keystore's modules, so refactoring them never breaks the benchmark.
 */
import path from "node:path";
import { GrpcH2Channel } from "./grpc-h2-client.js";
import {
  type BenchClient,
  generateKeystore,
  type KeystoreFixture,
  saveAtomically,
  withTokenRotated,
} from "./keystore-fixture.js";
import type { QuietWait } from "./machine-load.js";
import {
  awaitQuiet,
  clockTicks,
  type GatedLoadResult,
  type KeygateChild,
  memoryOf,
  metricValue,
  runLoad,
  SYNC_WORKER_RETIRED_MS,
  startKeygateChild,
} from "./processes.js";
import { type Target, target } from "./report.js";
import { median, quietRuns, round } from "./stats.js";
import { encodeCheck, judge, type WorkloadRequest } from "./workload.js";

export interface ScaleParams {
  readonly sizes: readonly number[];
  /** Distinct clients whose tokens the load cycles through (all of them when fewer). */
  readonly sampledClients: number;
  readonly sessions: number;
  readonly inflightPerSession: number;
  readonly warmupMs: number;
  readonly durationMs: number;
  readonly repetitions: number;
  readonly maxCalls: number;
  /** How long a save alone is given to revoke before falling back to SIGHUP. */
  readonly watchWindowMs: number;
  /** Upper bound on waiting for a revocation after SIGHUP. */
  readonly revocationTimeoutMs: number;
}

export interface Revocation {
  /**
   * "watcher": the save alone started a reload (seen on /keystore) and it revoked the token;
   * "sighup": no reload started within the watch window, SIGHUP was sent;
   * "not-revoked": still allowed when the wait ended.
   */
  readonly mechanism: "watcher" | "sighup" | "not-revoked";
  /** From the save (watcher) or from SIGHUP to the first denial seen. */
  readonly visibleMs: number | null;
  /** From the save to the reload's start as /keystore reports it (debounce + event delivery). */
  readonly reloadStartedAfterMs: number | null;
  /** Longest single Check during the wait (a busy main thread shows here). */
  readonly longestCheckMs: number;
  /** The slowest probe calls: when (ms after the save or signal) and how long. */
  readonly slowestChecks: ReadonlyArray<{ readonly atMs: number; readonly ms: number }>;
  readonly probeCalls: number;
  /** The rotated-in token is allowed afterwards (the edit was applied, not failed closed). */
  readonly newTokenAllowed: boolean;
}

export interface SizeResult {
  readonly clients: number;
  readonly fileBytes: number;
  readonly fixtureGenerationMs: number;
  /** The wait for a quiet machine before the server's start and before the revocation. */
  readonly quietWaits: { readonly start: QuietWait; readonly revocation: QuietWait };
  /** Spawn of `keygate serve` on a new database to /readyz 200: start-up and initial sync. */
  readonly serverStartToReadyMs: number;
  readonly check: {
    readonly runs: readonly GatedLoadResult[];
    /** Runs the medians are over (disturbed ones left out when quieter ones exist). */
    readonly runsUsed: number;
    readonly throughput: number;
    readonly p50Us: number;
    readonly p99Us: number;
    readonly serverCpuUsPerCall: number | null;
    /** Median CPU other processes used during the runs. */
    readonly backgroundCpuCores: number | null;
    readonly nonAllowed: number;
  };
  readonly revocation: Revocation;
  readonly memory: {
    readonly rssAfterStartMiB: number | null;
    readonly rssAfterLoadMiB: number | null;
    /** 2 s after the revocation's reload: the sync worker (and its heap) is still alive. */
    readonly rssAfterReloadMiB: number | null;
    /** Once the sync worker has been idle long enough to be retired: the steady state. */
    readonly rssSettledMiB: number | null;
    readonly peakRssMiB: number | null;
    /** keygate_process_resident_memory_bytes from /metrics, after the reload. */
    readonly metricsRssMiB: number | null;
  };
}

export interface ScaleSectionResult {
  readonly params: ScaleParams;
  readonly sizes: readonly SizeResult[];
  readonly targets: readonly Target[];
}

function elapsed(since: number): number {
  return round(performance.now() - since, 1);
}

/** Evenly spread clients, so large keystores are looked up across the whole table. */
function sampleClients(clients: readonly BenchClient[], count: number): BenchClient[] {
  if (clients.length <= count) return [...clients];
  const step = clients.length / count;
  return Array.from({ length: count }, (_, i) => clients[Math.floor(i * step)] as BenchClient);
}

function requestsFor(clients: readonly BenchClient[]): WorkloadRequest[] {
  return clients.map((client, index) => ({
    framedBase64: encodeCheck(client.token, `scale-${index}`).toString("base64"),
    expect: { clientId: client.id, upstreamKey: client.upstreamKey },
  }));
}

interface KeystoreView {
  readonly lastReloadAt: string | null;
}

async function keystoreView(adminPort: number): Promise<KeystoreView> {
  const response = await fetch(`http://127.0.0.1:${adminPort}/keystore`);
  return (await response.json()) as KeystoreView;
}

const RELOAD_POLL_MS = 20;
/**
 * One probe every 2 ms (about 500 Checks/s): fine enough to time a revocation, light
 * enough that on 2 cores it does not starve the reload worker it is waiting for.
 */
const PROBE_INTERVAL_MS = 2;
const SLOWEST_KEPT = 5;

/**
 * Saves a file revoking `client`'s token and measures how long until the running server
 * denies it, probing over gRPC every few milliseconds. If no reload has started (per /keystore)
 * within `watchWindowMs` of the save, there is no working file watcher: SIGHUP is sent
 * and the time is measured from the signal. A reload that started but is slow is
 * waited for, from the save, up to `revocationTimeoutMs`.
 */
async function measureRevocation(
  server: KeygateChild,
  fixture: KeystoreFixture,
  client: BenchClient,
  params: ScaleParams,
): Promise<Revocation> {
  const channel = await GrpcH2Channel.connect(server.grpcPort);
  try {
    const expect = { clientId: client.id, upstreamKey: client.upstreamKey };
    const oldRequest = encodeCheck(client.token, "revocation-probe");
    const before = judge(await channel.callOnce(oldRequest), expect);
    if (before.verdict !== "allow") {
      throw new Error(`revocation probe token was not allowed before the edit: ${before.verdict}`);
    }
    const reloadBefore = (await keystoreView(server.adminPort)).lastReloadAt;
    const rotated = withTokenRotated(fixture.text, client.digest);
    const slowest: Array<{ atMs: number; ms: number }> = [];
    let longest = 0;
    let calls = 0;
    let reloadStartedAt: string | null = null;
    let lastPoll = 0;
    /** Probes until a denial or a give-up; ms from `since` to the denial, or null. */
    const probeUntilDenied = async (
      since: number,
      giveUp: (elapsedMs: number) => boolean,
    ): Promise<number | null> => {
      while (calls < 2_000_000) {
        const t0 = performance.now();
        const answer = judge(await channel.callOnce(oldRequest), expect);
        const t1 = performance.now();
        calls++;
        const ms = t1 - t0;
        longest = Math.max(longest, ms);
        slowest.push({ atMs: round(t0 - since, 1), ms: round(ms, 1) });
        slowest.sort((a, b) => b.ms - a.ms);
        slowest.length = Math.min(slowest.length, SLOWEST_KEPT);
        if (answer.verdict === "deny") return t1 - since;
        if (answer.verdict !== "allow") {
          throw new Error(`revocation probe got ${answer.verdict} (${answer.code}) while waiting`);
        }
        if (reloadStartedAt === null && t1 - lastPoll >= RELOAD_POLL_MS) {
          lastPoll = t1;
          const view = await keystoreView(server.adminPort);
          if (view.lastReloadAt !== reloadBefore) reloadStartedAt = view.lastReloadAt;
        }
        if (giveUp(t1 - since)) return null;
        const pause = PROBE_INTERVAL_MS - (performance.now() - t0);
        if (pause > 0) await sleep(pause);
      }
      return null;
    };
    const savedAtWallClock = Date.now();
    saveAtomically(fixture, rotated.text);
    let mechanism: Revocation["mechanism"] = "watcher";
    let visible = await probeUntilDenied(
      performance.now(),
      (ms) =>
        (reloadStartedAt === null && ms >= params.watchWindowMs) ||
        ms >= params.revocationTimeoutMs,
    );
    const reloadStartedAfterMs =
      reloadStartedAt === null ? null : round(Date.parse(reloadStartedAt) - savedAtWallClock, 1);
    if (visible === null && reloadStartedAt === null) {
      mechanism = "sighup";
      const signalled = performance.now();
      process.kill(server.pid, "SIGHUP");
      visible = await probeUntilDenied(signalled, (ms) => ms >= params.revocationTimeoutMs);
    }
    if (visible === null) mechanism = "not-revoked";
    const after = judge(await channel.callOnce(encodeCheck(rotated.token, "rotated-in")), expect);
    return {
      mechanism,
      visibleMs: visible === null ? null : round(visible, 1),
      reloadStartedAfterMs,
      longestCheckMs: round(longest, 1),
      slowestChecks: slowest,
      probeCalls: calls,
      newTokenAllowed: after.verdict === "allow",
    };
  } finally {
    channel.close();
  }
}

/** RSS is sampled this long after a reload, the sync worker still up (and again once it is retired). */
const AFTER_RELOAD_MS = 2000;

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

function mib(bytes: number | null): number | null {
  return bytes === null ? null : round(bytes / 1024 / 1024, 1);
}

/** Runs the section; `log` reports progress. */
export async function runKeystoreScaleSection(
  params: ScaleParams,
  log: (line: string) => void,
): Promise<ScaleSectionResult> {
  const prepared: Array<{
    fixture: KeystoreFixture;
    generationMs: number;
    startWait: QuietWait;
    requests: WorkloadRequest[];
  }> = [];
  const servers: KeygateChild[] = [];
  try {
    for (const size of params.sizes) {
      const generationStart = performance.now();
      const fixture = generateKeystore(size, `scale-${size}`);
      const generationMs = elapsed(generationStart);
      const sampled = sampleClients(fixture.clients, params.sampledClients);
      // One server at a time on a quiet machine: its start-to-ready is the initial sync's target.
      const startWait = await awaitQuiet();
      const server = await startKeygateChild({
        keystorePath: fixture.keystorePath,
        dbPath: fixture.dbPath,
        masterKey: fixture.masterKeySpec,
        logLevel: "warn",
      });
      servers.push(server);
      prepared.push({ fixture, generationMs, startWait, requests: requestsFor(sampled) });
      log(
        `  ${size} clients (${round(fixture.bytes / 1024 / 1024, 1)} MiB): server ready ${round(server.startToReadyMs, 0)} ms after spawn, RSS ${memoryOf(server.pid)?.rssMiB.toFixed(1)} MiB`,
      );
    }
    const rssAfterStart = servers.map((server) => memoryOf(server.pid)?.rssMiB ?? null);

    const ticks = clockTicks();
    const runs: GatedLoadResult[][] = servers.map(() => []);
    for (let repetition = 1; repetition <= params.repetitions; repetition++) {
      for (const [index, server] of servers.entries()) {
        const { fixture, requests } = prepared[index] as (typeof prepared)[number];
        const result = await runLoad(
          {
            port: server.grpcPort,
            sessions: params.sessions,
            inflightPerSession: params.inflightPerSession,
            warmupMs: params.warmupMs,
            durationMs: params.durationMs,
            maxCalls: params.maxCalls,
            requests,
            serverPid: server.pid,
            clockTicks: ticks,
          },
          path.join(fixture.dir, "load-spec.json"),
        );
        runs[index]?.push(result);
        log(
          `  ${String(fixture.clients.length).padStart(6)} clients #${repetition}: ${result.throughput} checks/s, p50 ${result.latencyUs.p50} µs, p99 ${result.latencyUs.p99} µs, server CPU ${result.serverCpuUsPerCall} µs/check, background ${result.backgroundCpuCores} cores`,
        );
      }
    }
    const rssAfterLoad = servers.map((server) => memoryOf(server.pid)?.rssMiB ?? null);

    const sizes: SizeResult[] = [];
    for (const [index, server] of servers.entries()) {
      const entry = prepared[index] as (typeof prepared)[number];
      const { fixture } = entry;
      const victim = fixture.clients[Math.floor(fixture.clients.length / 2)] as BenchClient;
      const revocationWait = await awaitQuiet();
      const revocation = await measureRevocation(server, fixture, victim, params);
      log(
        `  ${fixture.clients.length} clients: revocation visible after ${revocation.visibleMs} ms (${revocation.mechanism}; reload started ${revocation.reloadStartedAfterMs} ms after the save); longest Check meanwhile ${revocation.longestCheckMs} ms; rotated-in token allowed: ${revocation.newTokenAllowed}`,
      );
      await sleep(AFTER_RELOAD_MS);
      const memory = memoryOf(server.pid);
      const metricsRss = await metricValue(
        server.adminPort,
        "keygate_process_resident_memory_bytes",
      ).catch(() => null);
      const sizeRuns = runs[index] ?? [];
      const used = quietRuns(sizeRuns);
      sizes.push({
        clients: fixture.clients.length,
        fileBytes: fixture.bytes,
        fixtureGenerationMs: entry.generationMs,
        quietWaits: { start: entry.startWait, revocation: revocationWait },
        serverStartToReadyMs: round(server.startToReadyMs, 1),
        check: {
          runs: sizeRuns,
          runsUsed: used.length,
          throughput: round(median(used.map((r) => r.throughput)), 1),
          p50Us: round(median(used.map((r) => r.latencyUs.p50)), 1),
          p99Us: round(median(used.map((r) => r.latencyUs.p99)), 1),
          serverCpuUsPerCall: round(median(used.map((r) => r.serverCpuUsPerCall ?? Number.NaN)), 2),
          backgroundCpuCores: round(median(used.map((r) => r.backgroundCpuCores ?? Number.NaN)), 3),
          nonAllowed: sizeRuns.reduce(
            (sum, r) =>
              sum +
              r.mismatched +
              r.transportErrors +
              Object.values(r.denied).reduce((a, b) => a + b, 0),
            0,
          ),
        },
        revocation,
        memory: {
          rssAfterStartMiB: rssAfterStart[index] ?? null,
          rssAfterLoadMiB: rssAfterLoad[index] ?? null,
          rssAfterReloadMiB: memory?.rssMiB ?? null,
          rssSettledMiB: null,
          peakRssMiB: memory?.peakRssMiB ?? null,
          metricsRssMiB: mib(metricsRss),
        },
      });
    }
    const lastReloadAt = performance.now() - AFTER_RELOAD_MS;
    await sleep(Math.max(0, lastReloadAt + SYNC_WORKER_RETIRED_MS - performance.now()));
    const settled = sizes.map((size, index) => ({
      ...size,
      memory: {
        ...size.memory,
        rssSettledMiB: memoryOf((servers[index] as KeygateChild).pid)?.rssMiB ?? null,
      },
    }));
    return { params, sizes: settled, targets: scaleTargets(settled) };
  } finally {
    for (const server of servers) await server.stop();
  }
}

const NOT_RUN = "size not in this run (BENCH_QUICK uses smaller keystores)";

function revocationTarget(clients: number, size: SizeResult | undefined, limitMs: number): Target {
  const name = `scale ${clients}: revoked token denied after save`;
  if (!size) return target(name, null, "<", limitMs, "ms", NOT_RUN);
  const { revocation } = size;
  const note =
    revocation.mechanism === "sighup"
      ? "measured from SIGHUP: the save alone did not revoke within the watch window (no file watcher active)"
      : revocation.mechanism === "not-revoked"
        ? "not denied even after SIGHUP"
        : undefined;
  return target(name, revocation.visibleMs, "<", limitMs, "ms", note);
}

function scaleTargets(sizes: readonly SizeResult[]): Target[] {
  const bySize = (clients: number) => sizes.find((size) => size.clients === clients);
  const small = bySize(10);
  const medium = bySize(10_000);
  const large = bySize(100_000);
  const note = large ? undefined : NOT_RUN;
  const nonAllowed = sizes.reduce((sum, size) => sum + size.check.nonAllowed, 0);
  return [
    target(
      "scale 100000: keygate serve on a new database, spawn to ready (start-up + initial sync)",
      large?.serverStartToReadyMs ?? null,
      "<",
      5000,
      "ms",
      note,
    ),
    revocationTarget(100_000, large, 2000),
    revocationTarget(10_000, medium, 1000),
    target(
      "scale 100000: Check p99 / 10-client Check p99",
      large && small ? round(large.check.p99Us / small.check.p99Us, 3) : null,
      "<=",
      1.1,
      "×",
      note,
    ),
    target(
      "scale 100000: server RSS after load and a reload (sync worker retired)",
      large?.memory.rssSettledMiB ?? null,
      "<",
      250,
      "MiB",
      note ??
        (large
          ? `${large.memory.rssAfterReloadMiB} MiB while the sync worker lives (10 s after each reload); peak VmHWM ${large.memory.peakRssMiB} MiB`
          : undefined),
    ),
    target("scale: answers that were not the expected allow", nonAllowed, "<=", 0, "calls"),
  ];
}
