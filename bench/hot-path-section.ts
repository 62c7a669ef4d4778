/**
 * Section "hot path": where keygate's per-Check CPU goes, phase by phase, measured
 * in-process on the real modules with the same request the load sends (tight loops,
 * ns per call). It explains the gap to the floor measured over
 * gRPC; it does not replace that measurement. The machine is shared, so each figure is the
 * fastest round (interference only ever adds time).
 */
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { Writable } from "node:stream";
import { createMetrics } from "../server/admin/metrics.js";
import { buildResponse } from "../server/auth/build-response.js";
import { decodeCheckRequest } from "../server/auth/check-attributes.js";
import { decide } from "../server/auth/decide.js";
import { extractCredential, viewBody } from "../server/auth/extract-credential.js";
import { resolvePolicy } from "../server/auth/policy.js";
import { parseMasterKeys } from "../server/crypto/aes-gcm.js";
import { hasValidChecksum } from "../server/crypto/token-format.js";
import { hashToken } from "../server/crypto/token-hash.js";
import { encodeCheckResponse } from "../server/grpc/check-response-wire.js";
import { createCheckService } from "../server/grpc/check-service.js";
import { lookupCredential } from "../server/grpc/lookup-credential.js";
import { recordDecision } from "../server/grpc/record-decision.js";
import { KeystoreManager } from "../server/keystore/reload/keystore-manager.js";
import { KeystoreStore } from "../server/keystore/store/store.js";
import { createLogger } from "../server/logger.js";
import { generateKeystore } from "./keystore-fixture.js";
import { awaitQuiet } from "./processes.js";
import { round } from "./stats.js";
import { CLIENT_ID_HEADER, encodeCheck, UPSTREAM_HEADER } from "./workload.js";

export interface HotPathParams {
  readonly iterations: number;
  readonly rounds: number;
}

export interface PhaseCost {
  readonly phase: string;
  /** Where the code lives. */
  readonly where: string;
  readonly nsPerCall: number;
}

export interface HotPathSectionResult {
  readonly params: HotPathParams;
  readonly phases: readonly PhaseCost[];
}

const discard = new Writable({
  write(_chunk, _encoding, callback) {
    callback();
  },
});

/** Keeps results alive so the optimiser cannot drop the measured work. */
let sink: unknown;

function measure(params: HotPathParams, work: () => unknown): number {
  const perRound: number[] = [];
  for (let round = 0; round < params.rounds; round++) {
    const start = process.hrtime.bigint();
    for (let i = 0; i < params.iterations; i++) sink = work();
    perRound.push(Number(process.hrtime.bigint() - start) / params.iterations);
  }
  return Math.min(...perRound);
}

/**
 * Runs the section.
 * @throws Error when the sample request is not allowed (the phases would measure a denial).
 */
export async function runHotPathSection(params: HotPathParams): Promise<HotPathSectionResult> {
  const fixture = generateKeystore(5, "hot-path");
  const client = fixture.clients[0];
  if (!client) throw new Error("fixture has no clients");
  const logger = createLogger("warn", discard);
  const dbPath = path.join(mkdtempSync(path.join(tmpdir(), "keygate-bench-hot-")), "k.db");
  const store = KeystoreStore.open(dbPath);
  try {
    const manager = new KeystoreManager(store, {
      path: fixture.keystorePath,
      dbPath,
      masterKeys: parseMasterKeys(fixture.masterKeySpec),
      env: {},
      requireClients: true,
      logger,
    });
    if ((await manager.reload()).result !== "applied") {
      throw new Error("hot path keystore did not load");
    }
    const wire = encodeCheck(client.token, "hot-path").subarray(5);
    const attributes = decodeCheckRequest(wire);
    const policy = resolvePolicy("enforce", attributes.contextExtensions);
    const extraction = extractCredential(attributes, policy.source);
    const lookup = lookupCredential(extraction, manager, manager.upstreamKeys);
    const metrics = createMetrics();
    const responseOptions = {
      upstreamHeader: UPSTREAM_HEADER,
      clientIdHeader: CLIENT_ID_HEADER,
      metadataUpstreamKey: false,
    };
    const decisionInput = {
      policy,
      generation: manager.generationId,
      path: attributes.path,
      bodyTruncated: attributes.bodyTruncated,
      extraction,
      lookup,
      now: Date.now(),
    };
    const decision = decide(decisionInput);
    if (decision.outcome !== "allow") throw new Error(`sample request denied: ${decision.reason}`);
    const context = { requestId: attributes.requestId, generation: manager.generationId };
    const response = buildResponse(decision, responseOptions, context);
    const token = extraction.kind === "token" ? extraction.token : "";
    const digest = hashToken(token);
    const started = process.hrtime.bigint();
    const service = createCheckService({
      mode: "enforce",
      responseOptions,
      keystore: manager,
      logger,
      metrics,
    });

    const phases: Array<[string, string, () => unknown]> = [
      [
        "whole Check handler (protobuf bytes in → framed response out)",
        "server/grpc/check-service.ts createCheckService()",
        () => service(wire),
      ],
      [
        "decodeCheckRequest (protobuf bytes → headers map, body)",
        "server/auth/check-attributes.ts decodeCheckRequest",
        () => decodeCheckRequest(wire),
      ],
      [
        "resolvePolicy",
        "server/auth/policy.ts resolvePolicy",
        () => resolvePolicy("enforce", attributes.contextExtensions),
      ],
      [
        "extractCredential (JSON.parse of the 2 KB body, probes)",
        "server/auth/extract-credential.ts extractCredential",
        () => extractCredential(attributes, "any"),
      ],
      [
        "  of which viewBody (Buffer→string + JSON.parse)",
        "server/auth/extract-credential.ts viewBody",
        () => viewBody(attributes),
      ],
      [
        "lookupCredential (checksum, hash, SQLite, upstream key memo)",
        "server/grpc/lookup-credential.ts lookupCredential",
        () => lookupCredential(extraction, manager, manager.upstreamKeys),
      ],
      [
        "  of which hashToken (SHA-256)",
        "server/crypto/token-hash.ts hashToken",
        () => hashToken(token),
      ],
      [
        "  of which hasValidChecksum (regex + CRC32)",
        "server/crypto/token-format.ts hasValidChecksum",
        () => hasValidChecksum(token),
      ],
      [
        "  of which KeystoreStore.lookup (prepared SQLite SELECT … JOIN)",
        "server/keystore/store/store.ts lookup",
        () => manager.lookup(digest),
      ],
      ["decide", "server/auth/decide.ts decide", () => decide(decisionInput)],
      [
        "buildResponse",
        "server/auth/build-response.ts buildResponse",
        () => buildResponse(decision, responseOptions, context),
      ],
      [
        "recordDecision (prom-client counter + histogram)",
        "server/grpc/record-decision.ts recordDecision",
        () =>
          recordDecision({ logger, metrics }, { attributes, policy, lookup, decision, started }),
      ],
      [
        "encodeCheckResponse (keygate's allow, framed)",
        "server/grpc/check-response-wire.ts encodeCheckResponse",
        () => encodeCheckResponse(response),
      ],
    ];
    await awaitQuiet();
    // Warm every phase up before timing any, so the JIT has settled.
    for (const [, , work] of phases) for (let i = 0; i < params.iterations; i++) sink = work();
    const results = phases.map(([phase, where, work]) => ({
      phase,
      where,
      nsPerCall: round(measure(params, work), 0),
    }));
    void sink;
    await manager.close();
    return { params, phases: results };
  } finally {
    store.close();
  }
}
