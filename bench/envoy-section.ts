/**
 * The "envoy" section (issue 9): cost per request through a real Envoy. Envoy from the
 * pip wheel (`--concurrency 1`) runs envoy/envoy.yaml's ext_authz settings in front of a
 * `direct_response` 200 (no upstream process), in four configurations: no ext_authz at
 * all, keygate, keygate's gRPC layer answering a fixed allow (the Node floor), and a
 * compiled reference ext_authz server (bench/go-authz, grpc-go + go-control-plane, the
 * same SHA-256 + lookup + header mutations). h2load over HTTP/1.1
 * sends a 2 KB Messages body with a known token in Authorization: closed-loop for
 * throughput and CPU per request (/proc/<pid>/stat of Envoy and of the authz server
 * apart), open-loop at a fixed rate for p50/p99; configurations interleaved, medians.
 * Rendering for the bench drops the access log and the per-client rate limit (the
 * limit would turn the load into 429s) and the response path's two ext_proc filters
 * (measured by the "response" section); every other ext_authz setting is the shipped one.
 */
import { type ChildProcess, execFileSync, spawn, spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import http from "node:http";
import { tmpdir } from "node:os";
import path from "node:path";
import { findEnvoy } from "../scripts/find-envoy.mjs";
import { freePort } from "../test/helpers/local-process.js";
import { benchEnvoyDocument, HCM, isExtProc } from "./envoy-config.js";
import { generateKeystore } from "./keystore-fixture.js";
import { processCpuTicks } from "./machine-load.js";
import {
  awaitQuiet,
  BENCH_DIR,
  clockTicks,
  memoryOf,
  resetPeakRss,
  SYNC_WORKER_RETIRED_MS,
  startFloorChild,
  startKeygateChild,
} from "./processes.js";
import { type Target, target } from "./report.js";
import { median, round } from "./stats.js";
import { messagesBody } from "./workload.js";

export interface EnvoyParams {
  /**
   * Closed-loop h2load client counts (one HTTP/1.1 connection each, one request in
   * flight); the first is the headline the targets use.
   */
  readonly closedClients: readonly number[];
  readonly closedSeconds: number;
  /** Open loop: requests per second, sent on a fixed schedule whatever the answers. */
  readonly openRate: number;
  readonly openSeconds: number;
  /** Requests per configuration before the measured runs (JIT, connection pools). */
  readonly warmupRequests: number;
  readonly repetitions: number;
}

/**
 * "floor" is bench/floor-server.ts: keygate's own gRPC layer answering every Check with
 * one fixed allow, with keygate's Node flags. Beside keygate it splits keygate's cost
 * into what Node and the gRPC layer take and what the decision adds; beside Go it shows
 * what a Node process costs before any decision.
 */
export const CONFIGURATIONS = ["none", "keygate", "floor", "go"] as const;
export type Configuration = (typeof CONFIGURATIONS)[number];

export interface EnvoyRun {
  readonly configuration: Configuration;
  readonly mode: "closed" | "open";
  readonly clients: number;
  readonly seconds: number;
  readonly requests: number;
  readonly ok2xx: number;
  readonly non2xx: number;
  readonly throughput: number;
  readonly p50Ms: number | null;
  readonly p99Ms: number | null;
  readonly envoyCpuUsPerRequest: number | null;
  readonly authzCpuUsPerRequest: number | null;
}

export interface ClosedLoopResult {
  readonly clients: number;
  readonly throughput: number;
  readonly envoyCpuUsPerRequest: number | null;
  readonly authzCpuUsPerRequest: number | null;
  readonly non2xx: number;
}

export interface EnvoyConfigurationResult {
  readonly configuration: Configuration;
  /** Per closed-loop client count, in params order. */
  readonly closed: readonly ClosedLoopResult[];
  /** The headline (first) client count's. */
  readonly throughput: number;
  readonly openP50Ms: number | null;
  readonly openP99Ms: number | null;
  readonly envoyCpuUsPerRequest: number | null;
  readonly authzCpuUsPerRequest: number | null;
  /** VmHWM over the measured runs only (reset after the warm-up). */
  readonly authzPeakRssMiB: number | null;
  /** VmHWM before that reset: start-up, the first keystore sync and the warm-up. */
  readonly authzStartupPeakRssMiB: number | null;
  readonly non2xx: number;
}

export interface EnvoySectionResult {
  readonly skipped: string | null;
  readonly params: EnvoyParams;
  readonly envoyVersion: string;
  readonly h2loadVersion: string;
  readonly goVersion: string;
  readonly configurations: readonly EnvoyConfigurationResult[];
  readonly runs: readonly EnvoyRun[];
  readonly targets: readonly Target[];
}

const GO_SOURCE_DIR = path.join(BENCH_DIR, "go-authz");
const GO_SOURCES = ["go.mod", "go.sum", "main.go"];
const GO_FALLBACK = "/usr/local/go/bin/go";
const REQUEST_PATH = "/v1/messages";
const READY_TIMEOUT_MS = 60_000;
const RSS_TARGET_MiB = 96;

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

function firstLine(command: string, args: readonly string[]): string {
  const result = spawnSync(command, args, { encoding: "utf8" });
  return `${result.stdout ?? ""}${result.stderr ?? ""}`.trim().split("\n")[0] ?? "";
}

/** h2load's path, installing Debian's nghttp2-client when it is missing. */
function ensureH2load(log: (line: string) => void): string | null {
  const found = spawnSync("sh", ["-c", "command -v h2load"], { encoding: "utf8" }).stdout.trim();
  if (found !== "") return found;
  log("h2load missing: apt-get install -y nghttp2-client");
  const env = { ...process.env, DEBIAN_FRONTEND: "noninteractive" };
  spawnSync("sh", ["-c", "apt-get update -qq && apt-get install -y -qq nghttp2-client"], {
    env,
    stdio: "ignore",
  });
  const again = spawnSync("sh", ["-c", "command -v h2load"], { encoding: "utf8" }).stdout.trim();
  return again === "" ? null : again;
}

function goBinary(): string | null {
  const inPath = spawnSync("sh", ["-c", "command -v go"], { encoding: "utf8" }).stdout.trim();
  if (inPath !== "") return inPath;
  return existsSync(GO_FALLBACK) ? GO_FALLBACK : null;
}

/**
 * Builds bench/go-authz into a temp dir keyed by the hash of its sources (rebuilt only
 * when they change).
 * @throws Error with go's output when the build fails.
 */
function buildGoAuthz(go: string): string {
  const hash = createHash("sha256");
  for (const file of GO_SOURCES) hash.update(readFileSync(path.join(GO_SOURCE_DIR, file)));
  const dir = path.join(tmpdir(), `keygate-go-authz-${hash.digest("hex").slice(0, 16)}`);
  const binary = path.join(dir, "go-authz");
  if (existsSync(binary)) return binary;
  mkdirSync(dir, { recursive: true });
  const result = spawnSync(go, ["build", "-o", binary, "."], {
    cwd: GO_SOURCE_DIR,
    encoding: "utf8",
    timeout: 600_000,
  });
  if (result.status !== 0) throw new Error(`go build failed:\n${result.stdout}${result.stderr}`);
  return binary;
}

interface Proc {
  readonly pid: number;
  readonly child: ChildProcess;
  output(): string;
  stop(): Promise<void>;
}

function spawnProc(command: string, args: readonly string[]): Proc {
  const child = spawn(command, args, { stdio: ["ignore", "pipe", "pipe"] });
  let output = "";
  const keep = (chunk: Buffer) => {
    output = (output + chunk.toString("utf8")).slice(-65_536);
  };
  child.stdout?.on("data", keep);
  child.stderr?.on("data", keep);
  const closed = new Promise<void>((resolve) => child.once("close", () => resolve()));
  process.once("exit", () => child.kill("SIGKILL"));
  return {
    pid: child.pid ?? 0,
    child,
    output: () => output,
    async stop() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.kill("SIGTERM");
      const timer = setTimeout(() => child.kill("SIGKILL"), 10_000);
      await closed;
      clearTimeout(timer);
    },
  };
}

async function startGoAuthz(binary: string, keysPath: string): Promise<Proc & { port: number }> {
  const proc = spawnProc(binary, ["-keys", keysPath]);
  const deadline = Date.now() + READY_TIMEOUT_MS;
  while (Date.now() < deadline && proc.child.exitCode === null) {
    const match = /go-authz listening (\d+)/.exec(proc.output());
    if (match) return { ...proc, port: Number(match[1]) };
    await sleep(20);
  }
  await proc.stop();
  throw new Error(`go-authz did not start:\n${proc.output()}`);
}

/** envoy.yaml for the bench: direct_response 200 routes, no access log or rate limit. */
function benchConfig(authzPort: number | null, ports: EnvoyPorts): string {
  // The ext_proc filters (the response path, issue 11) have their own section ("response"):
  // here the comparison is the authorization's cost, which the Go reference also pays.
  const { doc } = benchEnvoyDocument(
    {
      listenPort: ports.listen,
      adminPort: ports.admin,
      keygatePort: authzPort ?? ports.unused,
      upstreamPort: ports.unused,
    },
    (filter) =>
      isExtProc(filter) || (authzPort === null && filter.name === "envoy.filters.http.ext_authz"),
  );
  const routes = [...HCM, "route_config", "virtual_hosts", 0, "routes"];
  const count = (doc.getIn(routes) as { toJSON(): unknown[] }).toJSON().length;
  for (let index = 0; index < count; index++) {
    doc.deleteIn([...routes, index, "route"]);
    doc.setIn(
      [...routes, index, "direct_response"],
      doc.createNode({ status: 200, body: { inline_string: "ok" } }),
    );
    if (authzPort === null) doc.deleteIn([...routes, index, "typed_per_filter_config"]);
  }
  if (authzPort === null) {
    // No ext_authz: no cluster for it to health-check either.
    const clusters = (
      doc.getIn(["static_resources", "clusters"]) as { toJSON(): { name: string }[] }
    )
      .toJSON()
      .map((cluster) => cluster.name);
    doc.deleteIn(["static_resources", "clusters", clusters.indexOf("keygate")]);
  }
  return doc.toString({ lineWidth: 0 });
}

interface EnvoyPorts {
  readonly listen: number;
  readonly admin: number;
  readonly unused: number;
}

interface RunningEnvoy extends Proc {
  readonly url: string;
  readonly dir: string;
}

async function startBenchEnvoy(
  bin: string,
  authzPort: number | null,
  authorization: string,
  /** The floor allows every request: its probe checks only the allow. */
  deniesUnknown = true,
): Promise<RunningEnvoy> {
  const ports = { listen: await freePort(), admin: await freePort(), unused: await freePort() };
  const dir = mkdtempSync(path.join(tmpdir(), "keygate-bench-envoy-"));
  const configPath = path.join(dir, "envoy.yaml");
  writeFileSync(configPath, benchConfig(authzPort, ports));
  const proc = spawnProc(bin, [
    "--config-path",
    configPath,
    "--concurrency",
    "1",
    "--disable-hot-restart",
    "--log-level",
    "warn",
    "--drain-time-s",
    "1",
    "--parent-shutdown-time-s",
    "2",
  ]);
  const admin = `http://127.0.0.1:${ports.admin}`;
  const url = `http://127.0.0.1:${ports.listen}${REQUEST_PATH}`;
  const deadline = Date.now() + READY_TIMEOUT_MS;
  while (Date.now() < deadline && proc.child.exitCode === null) {
    try {
      const ready = (await (await fetch(`${admin}/ready`)).text()).trim() === "LIVE";
      const clusters = await (await fetch(`${admin}/clusters`)).text();
      const flags = clusters
        .split("\n")
        .filter((line) => line.startsWith("keygate::") && line.includes("::health_flags::"));
      const healthy =
        authzPort === null ||
        (flags.length > 0 && flags.every((line) => line.endsWith("::health_flags::healthy")));
      if (ready && healthy) {
        // The probe: a known token passes, and with ext_authz on, an unknown one does not.
        const good = await fetch(url, { method: "POST", headers: { authorization }, body: "{}" });
        await good.arrayBuffer();
        const bad = await fetch(url, {
          method: "POST",
          headers: { authorization: "Bearer kg_not-a-known-token" },
          body: "{}",
        });
        await bad.arrayBuffer();
        if (good.status === 200 && (authzPort === null || !deniesUnknown || bad.status === 401)) {
          return { ...proc, url, dir };
        }
      }
    } catch {
      // Not up yet.
    }
    await sleep(100);
  }
  await proc.stop();
  throw new Error(`envoy did not become ready (authz port ${authzPort}):\n${proc.output()}`);
}

function percentile(sorted: readonly number[], p: number): number | null {
  if (sorted.length === 0) return null;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] ?? null;
}

interface H2loadSpec {
  readonly h2load: string;
  readonly url: string;
  readonly bodyPath: string;
  readonly authorization: string;
  readonly clients: number;
  readonly requests: number;
}

function runH2load(spec: H2loadSpec): { requests: number; ok2xx: number; seconds: number } {
  const args = [
    "--h1",
    "-c",
    String(spec.clients),
    "-d",
    spec.bodyPath,
    "-H",
    `authorization: ${spec.authorization}`,
    "-H",
    "content-type: application/json",
    // A request count, not -D: h2load 1.52's timed mode over --h1 never finishes.
    "-n",
    String(spec.requests),
    spec.url,
  ];
  const text = execFileSync(spec.h2load, args, {
    encoding: "utf8",
    maxBuffer: 16 * 1024 * 1024,
    timeout: 120_000,
  });
  const finished = /finished in ([\d.]+)(m?s)/.exec(text);
  const done = /requests: \d+ total, \d+ started, (\d+) done/.exec(text);
  const ok = /status codes: (\d+) 2xx/.exec(text);
  if (!finished || !done || !ok) throw new Error(`unexpected h2load output:\n${text}`);
  const seconds = Number(finished[1]) / (finished[2] === "ms" ? 1000 : 1);
  return { requests: Number(done[1]), ok2xx: Number(ok[1]), seconds };
}

/**
 * Open-loop load: `rate` requests per second on a fixed schedule over keep-alive
 * HTTP/1.1 connections, each latency counted from its scheduled send time (so a stall
 * is not hidden by the requests it delayed). h2load cannot do this here: its --rps is
 * not applied over --h1 (1.52 sends as fast as it can).
 */
async function openLoop(
  url: string,
  body: Buffer,
  authorization: string,
  rate: number,
  seconds: number,
): Promise<{ requests: number; ok2xx: number; seconds: number; latenciesMs: number[] }> {
  const target = new URL(url);
  const agent = new http.Agent({ keepAlive: true, maxSockets: 512 });
  const total = Math.round(rate * seconds);
  const interval = 1000 / rate;
  const latenciesMs: number[] = [];
  let ok2xx = 0;
  const send = (due: number) =>
    new Promise<void>((resolve) => {
      const request = http.request(
        {
          agent,
          host: target.hostname,
          port: target.port,
          path: target.pathname,
          method: "POST",
          headers: {
            authorization,
            "content-type": "application/json",
            "content-length": body.length,
          },
        },
        (response) => {
          response.resume();
          response.once("end", () => {
            if ((response.statusCode ?? 0) >= 200 && (response.statusCode ?? 0) < 300) {
              ok2xx++;
              latenciesMs.push(performance.now() - due);
            }
            resolve();
          });
        },
      );
      request.once("error", () => resolve());
      request.end(body);
    });
  const started = performance.now();
  const pending: Promise<void>[] = [];
  for (let index = 0; index < total; index++) {
    const due = started + index * interval;
    const wait = due - performance.now();
    if (wait > 1) await sleep(wait);
    pending.push(send(due));
  }
  await Promise.all(pending);
  agent.destroy();
  return {
    requests: total,
    ok2xx,
    seconds: (performance.now() - started) / 1000,
    latenciesMs: latenciesMs.sort((a, b) => a - b),
  };
}

function skippedResult(params: EnvoyParams, why: string): EnvoySectionResult {
  return {
    skipped: why,
    params,
    envoyVersion: "",
    h2loadVersion: "",
    goVersion: "",
    configurations: [],
    runs: [],
    targets: [],
  };
}

/** Runs the section; returns `skipped` with the reason when Envoy, Go or h2load is missing. */
export async function runEnvoySection(
  params: EnvoyParams,
  log: (line: string) => void,
): Promise<EnvoySectionResult> {
  const envoyBin = findEnvoy();
  if (envoyBin === undefined) {
    return skippedResult(params, "Envoy not found (npm run install-envoy)");
  }
  const go = goBinary();
  if (go === null) {
    return skippedResult(
      params,
      "Go not found: install Go (https://go.dev/dl/) to build bench/go-authz",
    );
  }
  const h2load = ensureH2load(log);
  if (h2load === null) {
    return skippedResult(params, "h2load not found: apt-get install -y nghttp2-client");
  }
  const goAuthz = buildGoAuthz(go);

  const fixture = generateKeystore(1, "envoy");
  const client = fixture.clients[0];
  if (client === undefined) throw new Error("keystore fixture without a client");
  const authorization = `Bearer ${client.token}`;
  const keysPath = path.join(fixture.dir, "go-authz-keys.json");
  writeFileSync(
    keysPath,
    JSON.stringify({ [client.digest]: { id: client.id, upstream_key: client.upstreamKey } }),
  );
  const bodyPath = path.join(fixture.dir, "messages.json");
  writeFileSync(bodyPath, JSON.stringify(messagesBody(client.token)));
  const body = readFileSync(bodyPath);

  const keygate = await startKeygateChild({
    keystorePath: fixture.keystorePath,
    dbPath: fixture.dbPath,
    masterKey: fixture.masterKeySpec,
    logLevel: "warn",
  });
  const keygateReadyAt = performance.now();
  const goServer = await startGoAuthz(goAuthz, keysPath);
  const floor = await startFloorChild();
  const authzPid: Record<Configuration, number | null> = {
    none: null,
    keygate: keygate.pid,
    floor: floor.pid,
    go: goServer.pid,
  };
  const envoys: Partial<Record<Configuration, RunningEnvoy>> = {};
  const runs: EnvoyRun[] = [];
  const ticksPerSecond = clockTicks();
  try {
    envoys.none = await startBenchEnvoy(envoyBin, null, authorization);
    envoys.keygate = await startBenchEnvoy(envoyBin, keygate.grpcPort, authorization);
    envoys.floor = await startBenchEnvoy(envoyBin, floor.grpcPort, authorization, false);
    envoys.go = await startBenchEnvoy(envoyBin, goServer.port, authorization);

    const envoyOf = (configuration: Configuration): RunningEnvoy => {
      const envoy = envoys[configuration];
      if (envoy === undefined) throw new Error(`no envoy for ${configuration}`);
      return envoy;
    };
    // The warm-up also sizes each closed-loop run to about closedSeconds.
    const closedRequests: Partial<Record<Configuration, number>> = {};
    for (const configuration of CONFIGURATIONS) {
      const warmup = runH2load({
        h2load,
        url: envoyOf(configuration).url,
        bodyPath,
        authorization,
        clients: params.closedClients[0] ?? 100,
        requests: params.warmupRequests,
      });
      closedRequests[configuration] = Math.max(
        (params.closedClients[0] ?? 100) * 2,
        Math.round((warmup.ok2xx / warmup.seconds) * params.closedSeconds),
      );
    }
    // The peak that matters is the one under load, in keygate's steady state: its first
    // keystore sync runs in a worker that is retired once idle, so wait for that, and
    // report what start-up needed apart.
    const retired = keygateReadyAt + SYNC_WORKER_RETIRED_MS - performance.now();
    if (retired > 0) await sleep(retired);
    const startupPeak: Partial<Record<Configuration, number | null>> = {};
    for (const configuration of CONFIGURATIONS) {
      const pid = authzPid[configuration];
      if (pid === null) continue;
      startupPeak[configuration] = memoryOf(pid)?.peakRssMiB ?? null;
      resetPeakRss(pid);
    }

    const measure = async (
      configuration: Configuration,
      mode: "closed" | "open",
      closedClients: number,
    ): Promise<EnvoyRun> => {
      const envoy = envoyOf(configuration);
      const pid = authzPid[configuration];
      const envoyBefore = processCpuTicks(envoy.pid);
      const authzBefore = pid === null ? null : processCpuTicks(pid);
      const result =
        mode === "closed"
          ? {
              ...runH2load({
                h2load,
                url: envoy.url,
                bodyPath,
                authorization,
                clients: closedClients,
                requests: Math.max(
                  closedClients * 2,
                  closedRequests[configuration] ?? params.warmupRequests,
                ),
              }),
              latenciesMs: [],
            }
          : await openLoop(envoy.url, body, authorization, params.openRate, params.openSeconds);
      const envoyAfter = processCpuTicks(envoy.pid);
      const authzAfter = pid === null ? null : processCpuTicks(pid);
      const perRequest = (before: number | null, after: number | null) =>
        before === null || after === null || result.requests === 0
          ? null
          : round((((after - before) / ticksPerSecond) * 1e6) / result.requests, 1);
      const latencies = result.latenciesMs;
      const p50 = percentile(latencies, 50);
      const p99 = percentile(latencies, 99);
      return {
        configuration,
        mode,
        clients: closedClients,
        seconds: round(result.seconds, 2),
        requests: result.requests,
        ok2xx: result.ok2xx,
        non2xx: result.requests - result.ok2xx,
        throughput: round(result.ok2xx / result.seconds, 0),
        p50Ms: p50 === null ? null : round(p50, 3),
        p99Ms: p99 === null ? null : round(p99, 3),
        envoyCpuUsPerRequest: perRequest(envoyBefore, envoyAfter),
        authzCpuUsPerRequest: perRequest(authzBefore, authzAfter),
      };
    };

    for (let repetition = 0; repetition < params.repetitions; repetition++) {
      for (const configuration of CONFIGURATIONS) {
        for (const clients of params.closedClients) {
          await awaitQuiet();
          const closed = await measure(configuration, "closed", clients);
          runs.push(closed);
          log(
            `  ${repetition + 1}/${params.repetitions} ${configuration} closed ×${clients}: ${closed.throughput} req/s, CPU µs/req authz ${closed.authzCpuUsPerRequest ?? "-"} envoy ${closed.envoyCpuUsPerRequest}, non-2xx ${closed.non2xx}`,
          );
        }
        await awaitQuiet();
        const open = await measure(configuration, "open", 0);
        runs.push(open);
        log(
          `  ${repetition + 1}/${params.repetitions} ${configuration} open: p50 ${open.p50Ms} ms p99 ${open.p99Ms} ms, non-2xx ${open.non2xx}`,
        );
      }
    }

    const medianOrNull = (values: (number | null)[]): number | null => {
      const known = values.filter((value): value is number => value !== null);
      return known.length === 0 ? null : median(known);
    };
    const configurations = CONFIGURATIONS.map((configuration): EnvoyConfigurationResult => {
      const closed = runs.filter((r) => r.configuration === configuration && r.mode === "closed");
      const open = runs.filter((r) => r.configuration === configuration && r.mode === "open");
      const pid = authzPid[configuration];
      const perCount = params.closedClients.map((clients): ClosedLoopResult => {
        const these = closed.filter((r) => r.clients === clients);
        return {
          clients,
          throughput: median(these.map((r) => r.throughput)),
          envoyCpuUsPerRequest: medianOrNull(these.map((r) => r.envoyCpuUsPerRequest)),
          authzCpuUsPerRequest: medianOrNull(these.map((r) => r.authzCpuUsPerRequest)),
          non2xx: these.reduce((sum, r) => sum + r.non2xx, 0),
        };
      });
      const headline = perCount[0];
      return {
        configuration,
        closed: perCount,
        throughput: headline?.throughput ?? 0,
        openP50Ms: medianOrNull(open.map((r) => r.p50Ms)),
        openP99Ms: medianOrNull(open.map((r) => r.p99Ms)),
        envoyCpuUsPerRequest: headline?.envoyCpuUsPerRequest ?? null,
        authzCpuUsPerRequest: headline?.authzCpuUsPerRequest ?? null,
        authzPeakRssMiB: pid === null ? null : (memoryOf(pid)?.peakRssMiB ?? null),
        authzStartupPeakRssMiB: startupPeak[configuration] ?? null,
        non2xx: [...closed, ...open].reduce((sum, r) => sum + r.non2xx, 0),
      };
    });
    return {
      skipped: null,
      params,
      envoyVersion: firstLine(envoyBin, ["--version"]).replace(/^.*version: /, ""),
      h2loadVersion: firstLine(h2load, ["--version"]),
      goVersion: firstLine(go, ["version"]),
      configurations,
      runs,
      targets: envoyTargets(configurations),
    };
  } finally {
    for (const envoy of Object.values(envoys)) {
      await envoy.stop();
      rmSync(envoy.dir, { recursive: true, force: true });
    }
    await goServer.stop();
    await floor.stop();
    await keygate.stop();
    rmSync(fixture.dir, { recursive: true, force: true });
  }
}

function envoyTargets(configurations: readonly EnvoyConfigurationResult[]): Target[] {
  const of = (name: Configuration) => configurations.find((c) => c.configuration === name);
  const none = of("none");
  const keygate = of("keygate");
  const go = of("go");
  const ratio = (a: number | null | undefined, b: number | null | undefined) =>
    a === null || a === undefined || b === null || b === undefined || b === 0
      ? null
      : round(a / b, 3);
  const added = (side: EnvoyConfigurationResult | undefined) =>
    side?.openP50Ms == null || none?.openP50Ms == null ? null : side.openP50Ms - none.openP50Ms;
  const keygateAdded = added(keygate);
  const goAdded = added(go);
  return [
    target(
      "through Envoy: keygate closed-loop throughput / Go reference's",
      ratio(keygate?.throughput, go?.throughput),
      ">=",
      0.85,
      "x",
    ),
    target(
      "through Envoy: keygate CPU per request / Go reference's",
      ratio(keygate?.authzCpuUsPerRequest, go?.authzCpuUsPerRequest),
      "<=",
      1.3,
      "x",
    ),
    target(
      "through Envoy: keygate added p50 over no-authz minus Go's, open loop",
      keygateAdded === null || goAdded === null ? null : round(keygateAdded - goAdded, 3),
      "<=",
      0.3,
      "ms",
      keygateAdded === null || goAdded === null
        ? undefined
        : `keygate +${round(keygateAdded, 3)} ms, Go +${round(goAdded, 3)} ms`,
    ),
    target(
      "through Envoy: keygate peak RSS under load",
      keygate?.authzPeakRssMiB ?? null,
      "<=",
      RSS_TARGET_MiB,
      "MiB",
    ),
  ];
}

/** The section's main table (first row is the header): one row per configuration and client count. */
export function envoyTable(result: EnvoySectionResult): string[][] {
  const cell = (value: number | null) => (value === null ? "n/a" : String(value));
  const label = (configuration: Configuration) =>
    configuration === "none"
      ? "no ext_authz"
      : configuration === "go"
        ? "Go reference (grpc-go)"
        : configuration === "floor"
          ? "Node floor (keygate's gRPC layer, fixed allow)"
          : "keygate";
  const openRate = result.params.openRate;
  return [
    [
      "configuration",
      "closed-loop clients",
      "closed-loop req/s (2xx)",
      "non-2xx",
      "authz CPU µs/req",
      "Envoy CPU µs/req",
      `p50 ms @ ${openRate} req/s`,
      `p99 ms @ ${openRate} req/s`,
      "authz peak RSS MiB under load",
      "authz peak RSS MiB at start-up",
    ],
    ...result.configurations.flatMap((c) =>
      c.closed.map((closed) => [
        label(c.configuration),
        String(closed.clients),
        String(closed.throughput),
        String(closed.non2xx),
        cell(closed.authzCpuUsPerRequest),
        cell(closed.envoyCpuUsPerRequest),
        cell(c.openP50Ms),
        cell(c.openP99Ms),
        cell(c.authzPeakRssMiB),
        cell(c.authzStartupPeakRssMiB),
      ]),
    ),
  ];
}
