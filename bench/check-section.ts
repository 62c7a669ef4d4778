/**
 * Section "check": Check throughput and latency over real gRPC, keygate against the
 * floor (keygate's own gRPC layer answering a fixed allow), same load generator, same
 * requests, runs alternated (floor, keygate, floor, keygate…) and reduced to medians.
 */

import path from "node:path";
import { credentials, makeGenericClientConstructor } from "@grpc/grpc-js";
import { checkRequest } from "../test/helpers/check-request.js";
import { authorizationService } from "../test/helpers/envoy-protos.js";
import { generateKeystore, type KeystoreFixture } from "./keystore-fixture.js";
import type { LoadSpec } from "./load-generator.js";
import {
  clockTicks,
  type FloorChild,
  type GatedLoadResult,
  type KeygateChild,
  runLoad,
  startFloorChild,
  startKeygateChild,
} from "./processes.js";
import { type Target, target } from "./report.js";
import { median, quietRuns, round } from "./stats.js";
import {
  CLIENT_ID_HEADER,
  encodeCheck,
  messagesBody,
  UPSTREAM_HEADER,
  type WorkloadRequest,
} from "./workload.js";

export interface CheckParams {
  readonly clients: number;
  readonly sessions: number;
  readonly inflightPerSession: number;
  readonly warmupMs: number;
  readonly durationMs: number;
  /** Unloaded latency: one call in flight. */
  readonly serialDurationMs: number;
  readonly repetitions: number;
  readonly maxCalls: number;
}

export interface SideSummary {
  readonly throughput: number;
  readonly p50Us: number;
  readonly p99Us: number;
  readonly serverCpuUsPerCall: number | null;
  readonly serverCpuCores: number | null;
  readonly loadGeneratorCpuCores: number;
  /** Median CPU other processes used during the saturating runs (the machine is shared). */
  readonly backgroundCpuCores: number | null;
  readonly serialP50Us: number;
  readonly serialP99Us: number;
  /** Saturating runs the medians are over (runs disturbed by other processes are left out when quieter ones exist). */
  readonly runsUsed: number;
  /** Answers that were not the expected allow, over every measured run. */
  readonly nonAllowed: number;
  readonly allowed: number;
}

export interface CheckSectionResult {
  readonly params: CheckParams;
  readonly requestBodyBytes: number;
  readonly checkRequestBytes: number;
  readonly sanity: readonly string[];
  readonly runs: ReadonlyArray<{
    readonly side: "floor" | "keygate";
    readonly repetition: number;
    readonly load: "saturating" | "serial";
    readonly result: GatedLoadResult;
  }>;
  readonly floor: SideSummary;
  readonly keygate: SideSummary;
  readonly throughputRatio: number;
  readonly p99Ratio: number;
  readonly targets: readonly Target[];
}

type Side = "floor" | "keygate";

interface GrpcJsAnswer {
  status?: { code?: number };
  ok_response?: { headers?: Array<{ header?: { key?: string; value?: string } }> };
}

/** One Check through a real grpc-js client: proves the hand-framed load is what grpc-js would send. */
function grpcJsCheck(port: number, request: unknown): Promise<GrpcJsAnswer> {
  const Client = makeGenericClientConstructor(authorizationService(), "Authorization");
  const client = new Client(`127.0.0.1:${port}`, credentials.createInsecure());
  const typed = client as unknown as {
    Check(request: unknown, callback: (error: Error | null, response: GrpcJsAnswer) => void): void;
  };
  return new Promise((resolve, reject) => {
    typed.Check(request, (error, response) => {
      client.close();
      if (error) reject(error);
      else resolve(response);
    });
  });
}

function headerOf(answer: GrpcJsAnswer, key: string): string | undefined {
  return answer.ok_response?.headers?.find((option) => option.header?.key === key)?.header?.value;
}

/**
 * Verifies with grpc-js that keygate allows a known token with the swapped headers and
 * denies an unknown one, so the load's allow count means something.
 * @throws Error when keygate does not answer as it must.
 */
async function sanityChecks(keygate: KeygateChild, fixture: KeystoreFixture): Promise<string[]> {
  const client = fixture.clients[0];
  if (!client) throw new Error("fixture has no clients");
  const known = await grpcJsCheck(
    keygate.grpcPort,
    checkRequest({ json: messagesBody(client.token) }),
  );
  const swapped =
    (known.status?.code ?? 0) === 0 &&
    headerOf(known, UPSTREAM_HEADER) === client.upstreamKey &&
    headerOf(known, CLIENT_ID_HEADER) === client.id;
  if (!swapped) throw new Error(`keygate did not allow a known token: ${JSON.stringify(known)}`);
  const unknown = await grpcJsCheck(
    keygate.grpcPort,
    checkRequest({ json: messagesBody("not-a-known-token") }),
  );
  if ((unknown.status?.code ?? 0) !== 16) {
    throw new Error(`keygate did not deny an unknown token: ${JSON.stringify(unknown)}`);
  }
  return [
    `grpc-js client: known token allowed with ${UPSTREAM_HEADER} swapped and ${CLIENT_ID_HEADER}=${client.id}`,
    "grpc-js client: unknown token denied with status 16 (UNAUTHENTICATED)",
  ];
}

function summarize(
  runs: CheckSectionResult["runs"],
  side: Side,
  load: "saturating" | "serial",
): GatedLoadResult[] {
  return runs.filter((run) => run.side === side && run.load === load).map((run) => run.result);
}

function medianOrNull(values: readonly (number | null)[]): number | null {
  const known = values.filter((value): value is number => value !== null);
  return known.length > 0 ? round(median(known), 3) : null;
}

function sideSummary(runs: CheckSectionResult["runs"], side: Side): SideSummary {
  const all = [...summarize(runs, side, "saturating"), ...summarize(runs, side, "serial")];
  const saturating = quietRuns(summarize(runs, side, "saturating"));
  const serial = quietRuns(summarize(runs, side, "serial"));
  const cpu = saturating.map((r) => r.serverCpuUsPerCall).filter((v): v is number => v !== null);
  const cores = saturating.map((r) => r.serverCpuCores).filter((v): v is number => v !== null);
  const nonAllowed = all.reduce(
    (sum, r) =>
      sum + r.mismatched + r.transportErrors + Object.values(r.denied).reduce((a, b) => a + b, 0),
    0,
  );
  return {
    throughput: round(median(saturating.map((r) => r.throughput)), 1),
    p50Us: round(median(saturating.map((r) => r.latencyUs.p50)), 1),
    p99Us: round(median(saturating.map((r) => r.latencyUs.p99)), 1),
    serverCpuUsPerCall: cpu.length > 0 ? round(median(cpu), 2) : null,
    serverCpuCores: cores.length > 0 ? round(median(cores), 3) : null,
    loadGeneratorCpuCores: round(median(saturating.map((r) => r.loadGeneratorCpuCores)), 3),
    backgroundCpuCores: medianOrNull(saturating.map((r) => r.backgroundCpuCores)),
    serialP50Us: round(median(serial.map((r) => r.latencyUs.p50)), 1),
    serialP99Us: round(median(serial.map((r) => r.latencyUs.p99)), 1),
    runsUsed: saturating.length,
    nonAllowed,
    allowed: all.reduce((sum, r) => sum + r.allowed, 0),
  };
}

/** Runs the section; `log` reports progress. */
export async function runCheckSection(
  params: CheckParams,
  log: (line: string) => void,
): Promise<CheckSectionResult> {
  const fixture = generateKeystore(params.clients, "check");
  const framed = fixture.clients.map((client, index) =>
    encodeCheck(client.token, `bench-${index}`),
  );
  const keygateRequests: WorkloadRequest[] = fixture.clients.map((client, index) => ({
    framedBase64: (framed[index] as Buffer).toString("base64"),
    expect: { clientId: client.id, upstreamKey: client.upstreamKey },
  }));
  const floorRequests: WorkloadRequest[] = keygateRequests.map((request) => ({
    ...request,
    expect: null,
  }));

  let floor: FloorChild | undefined;
  let keygate: KeygateChild | undefined;
  try {
    floor = await startFloorChild();
    keygate = await startKeygateChild({
      keystorePath: fixture.keystorePath,
      dbPath: fixture.dbPath,
      masterKey: fixture.masterKeySpec,
      logLevel: "warn",
    });
    const sanity = await sanityChecks(keygate, fixture);
    for (const line of sanity) log(`  ${line}`);

    const ticks = clockTicks();
    const specPath = path.join(fixture.dir, "load-spec.json");
    const runs: Array<CheckSectionResult["runs"][number]> = [];
    const servers: Record<Side, { port: number; pid: number; requests: WorkloadRequest[] }> = {
      floor: { port: floor.grpcPort, pid: floor.pid, requests: floorRequests },
      keygate: { port: keygate.grpcPort, pid: keygate.pid, requests: keygateRequests },
    };
    for (let repetition = 1; repetition <= params.repetitions; repetition++) {
      for (const side of ["floor", "keygate"] as const) {
        const server = servers[side];
        const base: Omit<LoadSpec, "sessions" | "inflightPerSession" | "durationMs"> = {
          port: server.port,
          warmupMs: params.warmupMs,
          maxCalls: params.maxCalls,
          requests: server.requests,
          serverPid: server.pid,
          clockTicks: ticks,
        };
        const saturating = await runLoad(
          {
            ...base,
            sessions: params.sessions,
            inflightPerSession: params.inflightPerSession,
            durationMs: params.durationMs,
          },
          specPath,
        );
        runs.push({ side, repetition, load: "saturating", result: saturating });
        log(
          `  ${side.padEnd(7)} #${repetition} saturating: ${saturating.throughput} checks/s, p50 ${saturating.latencyUs.p50} µs, p99 ${saturating.latencyUs.p99} µs, server CPU ${saturating.serverCpuUsPerCall} µs/check, background ${saturating.backgroundCpuCores} cores (waited ${saturating.quietWait.waitedMs} ms for quiet)`,
        );
        const serial = await runLoad(
          { ...base, sessions: 1, inflightPerSession: 1, durationMs: params.serialDurationMs },
          specPath,
        );
        runs.push({ side, repetition, load: "serial", result: serial });
        log(
          `  ${side.padEnd(7)} #${repetition} serial:     p50 ${serial.latencyUs.p50} µs, p99 ${serial.latencyUs.p99} µs`,
        );
      }
    }
    const floorSummary = sideSummary(runs, "floor");
    const keygateSummary = sideSummary(runs, "keygate");
    const throughputRatio = round(keygateSummary.throughput / floorSummary.throughput, 3);
    const p99Ratio = round(keygateSummary.p99Us / floorSummary.p99Us, 3);
    const body = JSON.stringify(messagesBody(fixture.clients[0]?.token ?? ""));
    return {
      params,
      requestBodyBytes: Buffer.byteLength(body),
      checkRequestBytes: (framed[0]?.length ?? 5) - 5,
      sanity,
      runs,
      floor: floorSummary,
      keygate: keygateSummary,
      throughputRatio,
      p99Ratio,
      targets: [
        target("check: keygate throughput / floor throughput", throughputRatio, ">=", 0.8, "×"),
        target("check: keygate p99 / floor p99", p99Ratio, "<=", 1.5, "×"),
        target(
          "check: keygate answers that were not the expected allow",
          keygateSummary.nonAllowed,
          "<=",
          0,
          "calls",
        ),
      ],
    };
  } finally {
    await floor?.stop();
    await keygate?.stop();
  }
}
