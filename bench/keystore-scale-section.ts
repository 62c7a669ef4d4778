/**
 * Section "keystore scale": at each size (10, 10 000, 100 000 clients, one token each)
 * the initial load + validate + sync time and the reload time after a one-line edit,
 * measured in-process on the keystore modules; then real servers (`keygate serve`
 * children) for Check latency against the loaded keystore, the time from saving a file
 * that revokes a token to that token being denied over gRPC, and resident memory.
 */
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import path from "node:path";
import { Writable } from "node:stream";
import { GrpcH2Channel } from "./grpc-h2-client.js";
import {
  type BenchClient,
  generateKeystore,
  type KeystoreFixture,
  saveAtomically,
  withClientDisabled,
  withTokenRotated,
} from "./keystore-fixture.js";
import type { QuietWait } from "./machine-load.js";
import {
  awaitQuiet,
  clockTicks,
  type GatedLoadResult,
  importBuilt,
  type KeygateChild,
  memoryOf,
  metricValue,
  runLoad,
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

export interface InProcessTimings {
  readonly readMs: number;
  /** parseKeystore: YAML, schema, semantic checks, upstream key checks (decrypts). */
  readonly parseValidateMs: number;
  /** KeystoreStore.apply: one transaction writing the generation. */
  readonly applyMs: number;
  /** read + parse/validate + apply. */
  readonly initialSyncMs: number;
  /** KeystoreManager.reload() after a one-line edit (disable a client): worker, read, hash, parse, apply, warnings, change report, prune. */
  readonly reloadAfterEditMs: number;
  /** From the same reload's start until the main thread serves the new generation. */
  readonly editLiveMs: number;
  /** KeystoreManager.reload() with the file unchanged (worker, read + hash only). */
  readonly reloadUnchangedMs: number;
  /**
   * Longest main-thread SQLite write during that reload: what UsageRecorder.flush does
   * every few seconds (store.recordUsage, a BEGIN IMMEDIATE transaction), issued every
   * 100 ms while the worker syncs. A write that waits for the worker's lock blocks the
   * event loop, and every Check with it.
   */
  readonly mainThreadWriteBlockedMs: number;
  /** KeystoreStore.lookup of the sampled clients' digests, ns per lookup (the only size-dependent Check step). */
  readonly lookupNs: number;
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
  /** The wait for a quiet machine before the in-process timings and before the revocation. */
  readonly quietWaits: { readonly inProcess: QuietWait; readonly revocation: QuietWait };
  readonly inProcess: InProcessTimings;
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

const discard = new Writable({
  write(_chunk, _encoding, callback) {
    callback();
  },
});

function elapsed(since: number): number {
  return round(performance.now() - since, 1);
}

/** The keystore modules as keygate runs them: compiled, so reloads use the shipped worker. */
interface KeystoreModules {
  readonly aes: typeof import("../server/crypto/aes-gcm.js");
  readonly load: typeof import("../server/keystore/load.js");
  readonly store: typeof import("../server/keystore/store.js");
  readonly manager: typeof import("../server/keystore/keystore-manager.js");
  readonly logger: typeof import("../server/logger.js");
}

async function keystoreModules(): Promise<KeystoreModules> {
  return {
    aes: await importBuilt("server/crypto/aes-gcm.js"),
    load: await importBuilt("server/keystore/load.js"),
    store: await importBuilt("server/keystore/store.js"),
    manager: await importBuilt("server/keystore/keystore-manager.js"),
    logger: await importBuilt("server/logger.js"),
  };
}

/**
 * Initial sync and reload timings in this process, on a copy of the file: parse and
 * apply timed apart, then KeystoreManager.reload() (the server's reload: a worker
 * thread reads, hashes, parses, applies; the main thread switches generation; the
 * worker then sends the upstream-key warnings and the change report, and prunes).
 */
async function measureInProcess(
  fixture: KeystoreFixture,
  modules: KeystoreModules,
  sampled: readonly BenchClient[],
): Promise<InProcessTimings> {
  const dir = path.join(fixture.dir, "in-process");
  mkdirSync(dir, { recursive: true });
  const file = path.join(dir, "keystore.yaml");
  const dbPath = path.join(dir, "keystore.db");
  writeFileSync(file, fixture.text);
  const masterKeys = modules.aes.parseMasterKeys(fixture.masterKeySpec);

  const start = performance.now();
  const text = readFileSync(file, "utf8");
  const readMs = elapsed(start);
  const parseStart = performance.now();
  const loaded = modules.load.parseKeystore(text, {
    file,
    masterKeys,
    env: {},
    requireClients: true,
  });
  const parseValidateMs = elapsed(parseStart);
  const store = modules.store.KeystoreStore.open(dbPath);
  try {
    const applyStart = performance.now();
    store.apply(loaded, new Date());
    const applyMs = elapsed(applyStart);
    const initialSyncMs = round(readMs + parseValidateMs + applyMs, 1);
    const lookupNs = measureLookup(store, sampled);

    const manager = new modules.manager.KeystoreManager(store, {
      path: file,
      dbPath,
      masterKeys,
      env: {},
      requireClients: true,
      logger: modules.logger.createLogger("warn", discard),
    });
    const last = fixture.clients[fixture.clients.length - 1] as BenchClient;
    writeFileSync(file, withClientDisabled(text, last));
    const before = manager.generationId;
    const reloadStart = performance.now();
    let editLiveMs = Number.NaN;
    const live = setInterval(() => {
      if (manager.generationId === before) return;
      editLiveMs = elapsed(reloadStart);
      clearInterval(live);
    }, LIVE_POLL_MS);
    let reloading = true;
    const reload = manager.reload().finally(() => {
      reloading = false;
    });
    let mainThreadWriteBlockedMs = 0;
    const writer = sampled[0] as BenchClient;
    while (reloading && performance.now() - reloadStart < RELOAD_TIMEOUT_MS) {
      const t0 = performance.now();
      store.recordUsage([{ clientId: writer.id, lastUsedAt: Date.now(), count: 1 }]);
      mainThreadWriteBlockedMs = Math.max(mainThreadWriteBlockedMs, performance.now() - t0);
      await Promise.race([reload, sleep(USAGE_WRITE_EVERY_MS)]);
    }
    const outcome = await reload;
    const reloadAfterEditMs = elapsed(reloadStart);
    clearInterval(live);
    // A small keystore can go live and finish between two polls: the reload bounds it.
    if (Number.isNaN(editLiveMs)) editLiveMs = reloadAfterEditMs;
    if (outcome.result !== "applied") {
      throw new Error(`reload after a one-line edit was not applied: ${JSON.stringify(outcome)}`);
    }
    const unchangedStart = performance.now();
    const unchanged = await manager.reload();
    const reloadUnchangedMs = elapsed(unchangedStart);
    if (unchanged.result !== "unchanged") {
      throw new Error(`reload of an unchanged file did ${unchanged.result}`);
    }
    await manager.close();
    return {
      readMs,
      parseValidateMs,
      applyMs,
      initialSyncMs,
      reloadAfterEditMs,
      editLiveMs,
      reloadUnchangedMs,
      mainThreadWriteBlockedMs: round(mainThreadWriteBlockedMs, 1),
      lookupNs,
    };
  } finally {
    store.close();
  }
}

const USAGE_WRITE_EVERY_MS = 100;
const LIVE_POLL_MS = 2;
const RELOAD_TIMEOUT_MS = 120_000;
const LOOKUP_ROUNDS = 5;
const LOOKUPS_PER_ROUND = 20_000;

/** Median ns per KeystoreStore.lookup over the sampled digests (cycled). */
function measureLookup(
  store: { lookup(digest: string): unknown },
  sampled: readonly BenchClient[],
): number {
  const digests = sampled.map((client) => client.digest);
  const perRound: number[] = [];
  let found = 0;
  for (let round = 0; round <= LOOKUP_ROUNDS; round++) {
    const start = process.hrtime.bigint();
    for (let i = 0; i < LOOKUPS_PER_ROUND; i++) {
      if (store.lookup(digests[i % digests.length] as string) !== undefined) found++;
    }
    // Round 0 warms the statement and the page cache.
    if (round > 0) perRound.push(Number(process.hrtime.bigint() - start) / LOOKUPS_PER_ROUND);
  }
  if (found === 0) throw new Error("lookup benchmark found no digest");
  return round(median(perRound), 0);
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

/** RSS is sampled this long after a reload (the sync worker still up)... */
const AFTER_RELOAD_MS = 2000;
/**
 * ...and again this long after the last reload: keygate retires an idle sync worker
 * after 10 s (server/keystore/run-reload-worker.ts IDLE_MS), giving its heap back.
 */
const WORKER_RETIRED_MS = 12_500;

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
    inProcessWait: QuietWait;
    inProcess: InProcessTimings;
    requests: WorkloadRequest[];
  }> = [];
  const modules = await keystoreModules();
  for (const size of params.sizes) {
    const generationStart = performance.now();
    const fixture = generateKeystore(size, `scale-${size}`);
    const generationMs = elapsed(generationStart);
    // The last client is left out: the in-process edit disables it.
    const candidates = fixture.clients.slice(0, Math.max(1, fixture.clients.length - 1));
    const sampled = sampleClients(candidates, params.sampledClients);
    const inProcessWait = await awaitQuiet();
    const inProcess = await measureInProcess(fixture, modules, sampled);
    log(
      `  ${size} clients (${round(fixture.bytes / 1024 / 1024, 1)} MiB): parse+validate ${inProcess.parseValidateMs} ms, apply ${inProcess.applyMs} ms, initial sync ${inProcess.initialSyncMs} ms, reload after edit ${inProcess.reloadAfterEditMs} ms (live after ${inProcess.editLiveMs} ms; a main-thread write meanwhile blocked up to ${inProcess.mainThreadWriteBlockedMs} ms), unchanged ${inProcess.reloadUnchangedMs} ms, lookup ${inProcess.lookupNs} ns`,
    );
    prepared.push({
      fixture,
      generationMs,
      inProcessWait,
      inProcess,
      requests: requestsFor(sampled),
    });
  }

  const servers: KeygateChild[] = [];
  try {
    for (const { fixture } of prepared) {
      const server = await startKeygateChild({
        keystorePath: fixture.keystorePath,
        dbPath: fixture.dbPath,
        masterKey: fixture.masterKeySpec,
        logLevel: "warn",
      });
      servers.push(server);
      log(
        `  ${fixture.clients.length} clients: server ready ${round(server.startToReadyMs, 0)} ms after spawn, RSS ${memoryOf(server.pid)?.rssMiB.toFixed(1)} MiB`,
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
        quietWaits: { inProcess: entry.inProcessWait, revocation: revocationWait },
        inProcess: entry.inProcess,
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
    await sleep(Math.max(0, lastReloadAt + WORKER_RETIRED_MS - performance.now()));
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
      "scale 100000: initial load + validate + sync (read + parse + apply)",
      large?.inProcess.initialSyncMs ?? null,
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
