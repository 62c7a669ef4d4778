/**
 * Section "hostile": what one caller with hostile 4 MiB bodies costs keygate, over real
 * gRPC against the real `keygate serve` process (issue 8).
 *
 * 1. Server CPU per Check for each hostile body shape (no credential; declared
 *    application/json and text/plain), from /proc/<pid>/stat utime + stime over
 *    back-to-back calls (enough of them to span many clock ticks), median of several
 *    repetitions, with the wall time per call. The same for the normal 2 KB messages
 *    body, and for the floor (keygate's gRPC layer: HTTP/2 receive and framing, no keygate
 *    code) on one 4 MiB body, which is what any Node ext_authz server pays for the bytes.
 * 2. Normal Check latency under an open-loop load at a fixed rate, quiet and while one
 *    hostile client sends the costliest 4 MiB body back to back (one call in flight),
 *    runs interleaved (quiet, hostile, quiet, hostile…), medians; keygate and the floor.
 * 3. Where a 4 MiB Check's time goes, in-process on the real modules: protobuf decode,
 *    decodeCheckRequest, extractCredential (the body scan).
 */

import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { decodeCheckRequest } from "../server/auth/check-attributes.js";
import { extractCredential } from "../server/auth/extract-credential.js";
import { authorizationService } from "../test/helpers/envoy-protos.js";
import { type CallResult, GrpcH2Channel } from "./grpc-h2-client.js";
import { generateKeystore } from "./keystore-fixture.js";
import { processCpuTicks, processRuntimeNs } from "./machine-load.js";
import {
  awaitQuiet,
  clockTicks,
  type FloorChild,
  type GatedLoadResult,
  type KeygateChild,
  metricValue,
  runLoad,
  startFloorChild,
  startKeygateChild,
} from "./processes.js";
import { type Target, target } from "./report.js";
import { median, quantile, round } from "./stats.js";
import {
  BENCH_MODEL,
  describeAnswer,
  encodeCheck,
  encodeCheckWithBody,
  messagesBody,
  prepareJudge,
  type WorkloadRequest,
} from "./workload.js";

export interface HostileParams {
  /** Size of every hostile body. */
  readonly bodyBytes: number;
  /** Repetitions of each CPU measurement (shapes interleaved within a repetition). */
  readonly cpuRepetitions: number;
  /** Calls per CPU measurement: at least this many... */
  readonly minCalls: number;
  /** ...and more until the server has used this much CPU (10 ms clock ticks: keeps the error small)... */
  readonly minServerCpuMs: number;
  /** ...but no more than this many calls or this long. */
  readonly maxCalls: number;
  readonly maxMsPerMeasurement: number;
  /** Reference calls (and one of each hostile body) sent to each server before measuring. */
  readonly warmupCalls: number;
  /** Open-loop normal load for the p99 comparison. */
  readonly normalRatePerSecond: number;
  readonly normalSessions: number;
  readonly warmupMs: number;
  readonly durationMs: number;
  /** Quiet/hostile pairs per server. */
  readonly p99Repetitions: number;
  /** Rounds of each in-process phase timing (the fastest is kept). */
  readonly phaseRounds: number;
}

export type ContentType = "application/json" | "text/plain";

interface Shape {
  readonly name: string;
  readonly contentType: ContentType;
  readonly body: string;
  /** True for the 2 KB reference body (not hostile). */
  readonly reference: boolean;
}

export interface CpuMeasurement {
  readonly repetition: number;
  readonly calls: number;
  readonly serverCpuMsPerCheck: number;
  /** The same from the scheduler's ns clock (/proc/<pid>/task/<tid>/schedstat), a cross-check. */
  readonly schedstatMsPerCheck: number | null;
  readonly wallMsP50: number;
  readonly wallMsMax: number;
  /** Answers by description ("deny 401 UNAUTHORIZED", "allow client-000000"…). */
  readonly answers: Readonly<Record<string, number>>;
}

export interface ShapeResult {
  readonly server: "keygate" | "floor";
  readonly shape: string;
  readonly contentType: ContentType;
  readonly bodyBytes: number;
  readonly reference: boolean;
  /** Medians over the repetitions. */
  readonly serverCpuMsPerCheck: number;
  readonly schedstatMsPerCheck: number | null;
  readonly wallMsP50: number;
  readonly wallMsMax: number;
  readonly answer: string;
  readonly measurements: readonly CpuMeasurement[];
}

export interface LoadRun {
  readonly server: "keygate" | "floor";
  readonly mode: "quiet" | "hostile";
  readonly repetition: number;
  readonly result: GatedLoadResult;
  /** Hostile calls completed during the run (hostile mode). */
  readonly hostileCalls: number;
  readonly hostileAnswers: Readonly<Record<string, number>>;
  /** keygate's longest event-loop delay over the run (prom-client's monitorEventLoopDelay), ms. */
  readonly serverEventLoopMaxMs: number | null;
}

export interface LoadSummary {
  readonly server: "keygate" | "floor";
  readonly mode: "quiet" | "hostile";
  readonly throughput: number;
  readonly p50Us: number;
  readonly p99Us: number;
  readonly maxUs: number;
  readonly serverCpuCores: number | null;
  readonly hostileCallsPerSecond: number | null;
  readonly serverEventLoopMaxMs: number | null;
  readonly notAllowed: number;
}

export interface PhaseTiming {
  readonly shape: string;
  readonly protobufDecodeMs: number;
  readonly decodeCheckRequestMs: number;
  readonly extractCredentialMs: number;
  readonly extraction: string;
}

export interface HostileSectionResult {
  readonly params: HostileParams;
  readonly shapes: readonly ShapeResult[];
  readonly worstShape: string;
  readonly worstCpuMsPerCheck: number;
  /** The body the hostile client sent in the p99 runs. */
  readonly hostileLoadShape: string;
  readonly runs: readonly LoadRun[];
  readonly load: readonly LoadSummary[];
  readonly p99Ratio: number;
  readonly floorP99Ratio: number;
  readonly phases: readonly PhaseTiming[];
  readonly targets: readonly Target[];
}

const PROSE =
  "How do I rotate the ingress certificates without a brown-out? Roll one zone at a time. ";

function fill(unit: string, bytes: number): string {
  return unit.repeat(Math.max(0, Math.floor(bytes / Buffer.byteLength(unit))));
}

/** The hostile bodies, each about `bytes` long, and the 2 KB reference (known token). */
function hostileBodies(bytes: number, token: string): Array<{ name: string; body: string }> {
  const depth = Math.floor(bytes / 2);
  const keys: string[] = [];
  let used = 2;
  for (let i = 0; used < bytes - 16; i++) {
    const entry = `"k${i}":0`;
    keys.push(entry);
    used += entry.length + 1;
  }
  const wrapped = (open: string, inner: string, close: string) => `${open}${inner}${close}`;
  const tail = `"}],"api_key":"${token}"}`;
  const head = `{"model":"${BENCH_MODEL}","max_tokens":1024,"messages":[{"role":"user","content":"`;
  return [
    { name: "nested [[[…]]] (depth 2M)", body: "[".repeat(depth) + "]".repeat(depth) },
    // Inside an object the nesting must be skipped byte by byte to reach later top-level keys.
    {
      name: '{"m":[[[…]]]} nested in an object',
      body: wrapped('{"m":', "[".repeat(depth - 4) + "]".repeat(depth - 4), "}"),
    },
    { name: '{"m":[0,0,…]} in an object', body: wrapped('{"m":[', fill("0,", bytes - 9), "0]}") },
    { name: '{"k0":0,…} many keys', body: `{${keys.join(",")}}` },
    { name: "[0,0,…]", body: wrapped("[", fill("0,", bytes - 3), "0]") },
    { name: '{"s":"\\u0000…"} escapes', body: wrapped('{"s":"', fill("\\u0000", bytes - 8), '"}') },
    {
      name: '{"s":"日本語…"} non-ASCII',
      body: wrapped('{"s":"', fill("日本語テキスト", bytes - 8), '"}'),
    },
    {
      name: "valid, api_key at the very end",
      body: wrapped(head, fill(PROSE, bytes - head.length - tail.length), tail),
    },
  ];
}

function countAnswer(answers: Record<string, number>, result: CallResult): void {
  const key = describeAnswer(result);
  answers[key] = (answers[key] ?? 0) + 1;
}

function mainAnswer(measurements: readonly CpuMeasurement[]): string {
  const total: Record<string, number> = {};
  for (const m of measurements)
    for (const [key, n] of Object.entries(m.answers)) total[key] = (total[key] ?? 0) + n;
  const entries = Object.entries(total).sort((a, b) => b[1] - a[1]);
  return entries.map(([key, n]) => (entries.length === 1 ? key : `${key} ×${n}`)).join("; ");
}

/**
 * Back-to-back calls of one request (one in flight) until enough server CPU has been
 * used; server CPU per call from /proc/<pid>/stat, read after a short settle so the
 * collection of the last call's garbage is counted too.
 */
async function measureCpu(
  channel: GrpcH2Channel,
  pid: number,
  framed: Buffer,
  params: HostileParams,
  ticksPerSecond: number,
  repetition: number,
): Promise<CpuMeasurement> {
  await awaitQuiet();
  const msPerTick = 1000 / ticksPerSecond;
  const before = processCpuTicks(pid);
  const runtimeBefore = processRuntimeNs(pid);
  if (before === null) throw new Error(`server ${pid} is gone`);
  const started = performance.now();
  const walls: number[] = [];
  const answers: Record<string, number> = {};
  for (;;) {
    const t0 = performance.now();
    const result = await channel.callOnce(framed);
    walls.push(performance.now() - t0);
    countAnswer(answers, result);
    const usedMs = ((processCpuTicks(pid) ?? before) - before) * msPerTick;
    if (walls.length >= params.maxCalls) break;
    if (performance.now() - started >= params.maxMsPerMeasurement) break;
    if (walls.length >= params.minCalls && usedMs >= params.minServerCpuMs) break;
  }
  await sleep(100);
  const after = processCpuTicks(pid);
  const runtimeAfter = processRuntimeNs(pid);
  if (after === null) throw new Error(`server ${pid} is gone`);
  walls.sort((a, b) => a - b);
  return {
    repetition,
    calls: walls.length,
    serverCpuMsPerCheck: round(((after - before) * msPerTick) / walls.length, 3),
    schedstatMsPerCheck:
      runtimeBefore === null || runtimeAfter === null
        ? null
        : round((runtimeAfter - runtimeBefore) / 1e6 / walls.length, 3),
    wallMsP50: round(quantile(walls, 0.5), 3),
    wallMsMax: round(walls[walls.length - 1] ?? Number.NaN, 3),
    answers,
  };
}

function shapeResult(
  server: "keygate" | "floor",
  shape: Shape,
  measurements: readonly CpuMeasurement[],
): ShapeResult {
  return {
    server,
    shape: shape.name,
    contentType: shape.contentType,
    bodyBytes: Buffer.byteLength(shape.body),
    reference: shape.reference,
    serverCpuMsPerCheck: round(median(measurements.map((m) => m.serverCpuMsPerCheck)), 3),
    schedstatMsPerCheck: medianOrNull(measurements.map((m) => m.schedstatMsPerCheck)),
    wallMsP50: round(median(measurements.map((m) => m.wallMsP50)), 3),
    wallMsMax: round(Math.max(...measurements.map((m) => m.wallMsMax)), 3),
    answer: mainAnswer(measurements),
    measurements,
  };
}

function medianOrNull(values: readonly (number | null)[]): number | null {
  const known = values.filter((value): value is number => value !== null);
  return known.length > 0 ? round(median(known), 3) : null;
}

interface HostileClient {
  stop(): Promise<{ calls: number; answers: Record<string, number> }>;
}

/** One hostile caller: the same 4 MiB request back to back, one in flight, on its own connection. */
async function startHostileClient(port: number, framed: Buffer): Promise<HostileClient> {
  const channel = await GrpcH2Channel.connect(port);
  let running = true;
  let calls = 0;
  const answers: Record<string, number> = {};
  const loop = (async () => {
    while (running) {
      countAnswer(answers, await channel.callOnce(framed));
      calls++;
    }
  })();
  return {
    async stop() {
      running = false;
      await loop;
      channel.close();
      return { calls, answers };
    },
  };
}

/** Reads keygate's longest event-loop delay since the last scrape (the scrape resets it), ms. */
async function eventLoopMaxMs(adminPort: number | null): Promise<number | null> {
  if (adminPort === null) return null;
  const seconds = await metricValue(adminPort, "keygate_nodejs_eventloop_lag_max_seconds");
  return seconds === null ? null : round(seconds * 1000, 1);
}

function loadSummary(
  runs: readonly LoadRun[],
  server: "keygate" | "floor",
  mode: "quiet" | "hostile",
  params: HostileParams,
): LoadSummary {
  const mine = runs.filter((run) => run.server === server && run.mode === mode);
  const results = mine.map((run) => run.result);
  const cores = results.map((r) => r.serverCpuCores).filter((v): v is number => v !== null);
  const lags = mine.map((run) => run.serverEventLoopMaxMs).filter((v): v is number => v !== null);
  return {
    server,
    mode,
    throughput: round(median(results.map((r) => r.throughput)), 1),
    p50Us: round(median(results.map((r) => r.latencyUs.p50)), 1),
    p99Us: round(median(results.map((r) => r.latencyUs.p99)), 1),
    maxUs: round(median(results.map((r) => r.latencyUs.max)), 1),
    serverCpuCores: cores.length > 0 ? round(median(cores), 3) : null,
    hostileCallsPerSecond:
      mode === "hostile"
        ? round(
            median(
              mine.map((run) => run.hostileCalls / ((params.warmupMs + params.durationMs) / 1000)),
            ),
            1,
          )
        : null,
    serverEventLoopMaxMs: lags.length > 0 ? round(median(lags), 1) : null,
    notAllowed: results.reduce(
      (sum, r) =>
        sum + r.mismatched + r.transportErrors + Object.values(r.denied).reduce((a, b) => a + b, 0),
      0,
    ),
  };
}

function fastestMs(rounds: number, work: () => unknown): { ms: number; value: unknown } {
  let best = Number.POSITIVE_INFINITY;
  let value: unknown;
  for (let i = 0; i < rounds; i++) {
    const t0 = performance.now();
    value = work();
    best = Math.min(best, performance.now() - t0);
  }
  return { ms: round(best, 3), value };
}

/** In-process: the three phases a 4 MiB Check goes through before the lookup, per body. */
function phaseTimings(shapes: readonly Shape[], rounds: number): PhaseTiming[] {
  const method = authorizationService().Check;
  if (!method) throw new Error("Authorization/Check missing");
  return shapes.map((shape) => {
    const wire = encodeCheckWithBody(shape.body, shape.contentType, "phase").subarray(5);
    // protobufjs's full decode, for comparison: keygate's own reader skips what it does not use.
    const decoded = fastestMs(rounds, () => method.requestDeserialize(wire));
    const attributes = fastestMs(rounds, () => decodeCheckRequest(wire));
    const extraction = fastestMs(rounds, () =>
      extractCredential(attributes.value as ReturnType<typeof decodeCheckRequest>, "any"),
    );
    const outcome = extraction.value as ReturnType<typeof extractCredential>;
    return {
      shape: `${shape.name} (${shape.contentType})`,
      protobufDecodeMs: decoded.ms,
      decodeCheckRequestMs: attributes.ms,
      extractCredentialMs: extraction.ms,
      extraction:
        outcome.kind === "invalid"
          ? `invalid: ${outcome.reason}`
          : `${outcome.kind}, body ${outcome.body.kind}`,
    };
  });
}

/** Runs the section; `log` reports progress. */
export async function runHostileSection(
  params: HostileParams,
  log: (line: string) => void,
): Promise<HostileSectionResult> {
  const fixture = generateKeystore(5, "hostile");
  const client = fixture.clients[0];
  if (!client) throw new Error("fixture has no clients");
  const reference: Shape = {
    name: "normal 2 KB messages body (known token)",
    contentType: "application/json",
    body: JSON.stringify(messagesBody(client.token)),
    reference: true,
  };
  const shapes: Shape[] = [];
  for (const { name, body } of hostileBodies(params.bodyBytes, client.token)) {
    for (const contentType of ["application/json", "text/plain"] as const) {
      shapes.push({ name, contentType, body, reference: false });
    }
  }
  const framedOf = new Map<Shape, Buffer>();
  framedOf.set(reference, encodeCheck(client.token, "hostile-reference"));
  for (const shape of shapes) {
    framedOf.set(shape, encodeCheckWithBody(shape.body, shape.contentType, "hostile"));
  }
  const framed = (shape: Shape) => framedOf.get(shape) as Buffer;

  let keygate: KeygateChild | undefined;
  let floor: FloorChild | undefined;
  const channels: GrpcH2Channel[] = [];
  try {
    keygate = await startKeygateChild({
      keystorePath: fixture.keystorePath,
      dbPath: fixture.dbPath,
      masterKey: fixture.masterKeySpec,
      logLevel: "warn",
    });
    floor = await startFloorChild();
    const ticks = clockTicks();
    const keygateChannel = await GrpcH2Channel.connect(keygate.grpcPort);
    const floorChannel = await GrpcH2Channel.connect(floor.grpcPort);
    channels.push(keygateChannel, floorChannel);

    // 1. CPU per Check, shapes interleaved within each repetition, after a warm-up (JIT).
    prepareJudge();
    const keygateShapes = [reference, ...shapes];
    const floorShapes = [reference, ...shapes.filter((s) => s.name.startsWith("valid"))];
    for (const [channel, list] of [
      [keygateChannel, keygateShapes],
      [floorChannel, floorShapes],
    ] as const) {
      for (let i = 0; i < params.warmupCalls; i++) await channel.callOnce(framed(reference));
      for (const shape of list) await channel.callOnce(framed(shape));
    }
    const measured = new Map<string, { shape: Shape; runs: CpuMeasurement[] }>();
    for (let repetition = 1; repetition <= params.cpuRepetitions; repetition++) {
      for (const [server, list, channel, pid] of [
        ["keygate", keygateShapes, keygateChannel, keygate.pid],
        ["floor", floorShapes, floorChannel, floor.pid],
      ] as const) {
        for (const shape of list) {
          const m = await measureCpu(channel, pid, framed(shape), params, ticks, repetition);
          const key = `${server}\0${shape.name}\0${shape.contentType}`;
          const entry = measured.get(key) ?? { shape, runs: [] };
          entry.runs.push(m);
          measured.set(key, entry);
          log(
            `  ${server.padEnd(7)} #${repetition} ${shape.name} (${shape.contentType}): ${m.serverCpuMsPerCheck} ms CPU/check (schedstat ${m.schedstatMsPerCheck}) over ${m.calls} calls, wall p50 ${m.wallMsP50} ms; ${Object.keys(m.answers).join(", ")}`,
          );
        }
      }
    }
    const shapeResults = [...measured.entries()].map(([key, { shape, runs }]) =>
      shapeResult(key.startsWith("keygate") ? "keygate" : "floor", shape, runs),
    );
    const hostileKeygate = shapeResults.filter((s) => s.server === "keygate" && !s.reference);
    const worst = hostileKeygate.reduce((a, b) =>
      b.serverCpuMsPerCheck > a.serverCpuMsPerCheck ? b : a,
    );
    const worstShape = shapes.find(
      (s) => s.name === worst.shape && s.contentType === worst.contentType,
    ) as Shape;
    log(
      `  worst: ${worst.shape} (${worst.contentType}) ${worst.serverCpuMsPerCheck} ms CPU per Check`,
    );

    // 2. Normal p99, quiet vs one hostile client sending the worst body, interleaved.
    const normalRequests: WorkloadRequest[] = fixture.clients.map((c, index) => ({
      framedBase64: encodeCheck(c.token, `hostile-normal-${index}`).toString("base64"),
      expect: { clientId: c.id, upstreamKey: c.upstreamKey },
    }));
    const specPath = path.join(fixture.dir, "load-spec.json");
    const runs: LoadRun[] = [];
    for (let repetition = 1; repetition <= params.p99Repetitions; repetition++) {
      for (const server of ["keygate", "floor"] as const) {
        const child = server === "keygate" ? keygate : floor;
        const adminPort = server === "keygate" ? keygate.adminPort : null;
        for (const mode of ["quiet", "hostile"] as const) {
          let hostile: HostileClient | undefined;
          const result = await runLoad(
            {
              port: child.grpcPort,
              sessions: params.normalSessions,
              inflightPerSession: 1,
              ratePerSecond: params.normalRatePerSecond,
              warmupMs: params.warmupMs,
              durationMs: params.durationMs,
              maxCalls: params.normalRatePerSecond * (params.durationMs / 1000 + 60),
              requests: normalRequests.map((r) =>
                server === "floor" ? { ...r, expect: null } : r,
              ),
              serverPid: child.pid,
              clockTicks: ticks,
            },
            specPath,
            async () => {
              await eventLoopMaxMs(adminPort); // resets the histogram
              if (mode === "hostile") {
                hostile = await startHostileClient(child.grpcPort, framed(worstShape));
              }
            },
          );
          const stopped = hostile ? await hostile.stop() : { calls: 0, answers: {} };
          const lagMs = await eventLoopMaxMs(adminPort);
          runs.push({
            server,
            mode,
            repetition,
            result,
            hostileCalls: stopped.calls,
            hostileAnswers: stopped.answers,
            serverEventLoopMaxMs: lagMs,
          });
          log(
            `  ${server.padEnd(7)} #${repetition} ${mode.padEnd(7)}: ${result.throughput} checks/s, p50 ${result.latencyUs.p50} µs, p99 ${result.latencyUs.p99} µs, max ${result.latencyUs.max} µs; server ${result.serverCpuCores} cores${server === "keygate" ? `, event loop max ${lagMs} ms` : ""}${mode === "hostile" ? `; ${stopped.calls} hostile calls` : ""}; background ${result.backgroundCpuCores} cores, schedule lag p99 ${result.scheduleLagUs?.p99} µs`,
          );
        }
      }
    }
    const load = (["keygate", "floor"] as const).flatMap((server) =>
      (["quiet", "hostile"] as const).map((mode) => loadSummary(runs, server, mode, params)),
    );
    const p99Of = (server: "keygate" | "floor", mode: "quiet" | "hostile") =>
      load.find((l) => l.server === server && l.mode === mode)?.p99Us ?? Number.NaN;
    const p99Ratio = round(p99Of("keygate", "hostile") / p99Of("keygate", "quiet"), 2);
    const floorP99Ratio = round(p99Of("floor", "hostile") / p99Of("floor", "quiet"), 2);

    // 3. In-process phases of the JSON-declared hostile bodies.
    await awaitQuiet();
    const phases = phaseTimings(
      shapes.filter((s) => s.contentType === "application/json" || s === worstShape),
      params.phaseRounds,
    );
    for (const phase of phases) {
      log(
        `  phases ${phase.shape}: protobuf decode ${phase.protobufDecodeMs} ms, decodeCheckRequest ${phase.decodeCheckRequestMs} ms, extractCredential ${phase.extractCredentialMs} ms (${phase.extraction})`,
      );
    }

    const keygateNotAllowed = load
      .filter((l) => l.server === "keygate")
      .reduce((sum, l) => sum + l.notAllowed, 0);
    return {
      params,
      shapes: shapeResults,
      worstShape: `${worst.shape} (${worst.contentType})`,
      worstCpuMsPerCheck: worst.serverCpuMsPerCheck,
      hostileLoadShape: `${worstShape.name} (${worstShape.contentType})`,
      runs,
      load,
      p99Ratio,
      floorP99Ratio,
      phases,
      targets: [
        target(
          "hostile: worst server CPU per 4 MiB Check",
          worst.serverCpuMsPerCheck,
          "<=",
          20,
          "ms",
          `${worst.shape}, ${worst.contentType}`,
        ),
        target(
          "hostile: normal Check p99 with one hostile client / quiet p99",
          p99Ratio,
          "<=",
          1.5,
          "×",
          `${p99Of("keygate", "hostile")} / ${p99Of("keygate", "quiet")} µs; floor ${floorP99Ratio}×`,
        ),
        target(
          "hostile: normal Checks not answered with the expected allow",
          keygateNotAllowed,
          "<=",
          0,
          "calls",
        ),
      ],
    };
  } finally {
    for (const channel of channels) channel.close();
    await keygate?.stop();
    await floor?.stop();
  }
}
