/**
 * The "response" section (issue 11): what keygate's response path (ext_proc, after
 * ext_authz in envoy/envoy.yaml) costs a streamed completion. A real Envoy from the pip
 * wheel runs the shipped envoy.yaml in front of a provider stub that streams an Anthropic
 * Messages response as Server-Sent Events (message_start at once, then deltas a few
 * milliseconds apart, message_delta with the usage, message_stop), in two configurations
 * interleaved: ext_authz alone (both ext_proc filters removed) and ext_authz + ext_proc as
 * shipped. Measured from outside: the time to the first streamed byte and to the last, at
 * a fixed request rate; keygate's CPU per streamed response (/proc); and the p99 of
 * Checks sent straight to keygate's gRPC port at a fixed rate meanwhile, so that usage
 * accounting is seen not to slow a Check.
 */
import http from "node:http";
import http2 from "node:http2";
import type { AddressInfo } from "node:net";
import { findEnvoy } from "../scripts/find-envoy.mjs";
import { type EnvoyProcess, startEnvoy } from "../test/helpers/envoy.js";
import { serializeProcessingRequest, stringStruct } from "../test/helpers/ext-proc-protos.js";
import { benchEnvoyDocument, isExtProc } from "./envoy-config.js";
import { GrpcH2Channel, grpcFrame, PROCESS_PATH } from "./grpc-h2-client.js";
import { generateKeystore } from "./keystore-fixture.js";
import { processCpuTicks } from "./machine-load.js";
import { awaitQuiet, clockTicks, startKeygateChild } from "./processes.js";
import { type Target, target } from "./report.js";
import { median, quantile, round } from "./stats.js";
import { BENCH_MODEL, encodeCheck } from "./workload.js";

export interface ResponseParams {
  /** Streamed requests per second through Envoy, on a fixed schedule. */
  readonly rate: number;
  readonly seconds: number;
  /** Content deltas per streamed response, and the provider's pause between them. */
  readonly deltas: number;
  readonly deltaIntervalMs: number;
  /** Checks per second sent straight to keygate meanwhile. */
  readonly checkRate: number;
  readonly warmupRequests: number;
  readonly repetitions: number;
  /**
   * Token-by-token streams straight to keygate's Process method, as the usage filter sends
   * them: this many at once, each with `tokenEvents` content deltas `tokenGapMs` apart.
   */
  readonly tokenStreams: number;
  readonly tokenEvents: number;
  readonly tokenGapMs: number;
}

export const RESPONSE_CONFIGURATIONS = ["ext_authz only", "ext_authz + ext_proc"] as const;
export type ResponseConfiguration = (typeof RESPONSE_CONFIGURATIONS)[number];

export interface ResponseRun {
  readonly configuration: ResponseConfiguration;
  readonly requests: number;
  readonly complete: number;
  readonly firstByteP50Ms: number | null;
  readonly firstByteP99Ms: number | null;
  readonly lastByteP50Ms: number | null;
  readonly keygateCpuUsPerResponse: number | null;
  readonly checkP50Ms: number | null;
  readonly checkP99Ms: number | null;
  /** Side Checks not answered with grpc-status 0. */
  readonly checksFailed: number;
}

export interface ResponseConfigurationResult {
  readonly configuration: ResponseConfiguration;
  readonly firstByteP50Ms: number | null;
  readonly firstByteP99Ms: number | null;
  readonly lastByteP50Ms: number | null;
  readonly keygateCpuUsPerResponse: number | null;
  readonly checkP99Ms: number | null;
  readonly incomplete: number;
}

export interface ResponseSectionResult {
  readonly skipped: string | null;
  readonly params: ResponseParams;
  readonly envoyVersion: string;
  readonly configurations: readonly ResponseConfigurationResult[];
  readonly runs: readonly ResponseRun[];
  /** keygate_usage_tokens_total summed over its series after the runs: usage was recorded. */
  readonly usageTokensRecorded: number | null;
  /**
   * Check p99 with the response path / without as the median of the paired runs' ratios:
   * the target's method until 2026-12-03, reported beside the pooled one it gave way to.
   */
  readonly checkP99PairedRatio: number | null;
  /** keygate CPU per usage-filter message over the token-by-token runs (median), µs. */
  readonly tokenStreamCpuUsPerMessage: number | null;
  /** Token-by-token streams whose usage keygate did not count (must be 0). */
  readonly tokenStreamsUncounted: number;
  readonly targets: readonly Target[];
}

const REQUEST_PATH = "/v1/messages";
/** The whole streamed response must arrive, or the run counts it as incomplete. */
const MESSAGE_STOP = "event: message_stop";

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

function sse(event: string, data: unknown): string {
  return `event: ${event}\ndata: ${JSON.stringify(data)}\n\n`;
}

/**
 * A provider stub streaming one Anthropic Messages completion per request: the usage in
 * message_start (input, cache) and message_delta (output), like the real API.
 */
async function startStreamingProvider(
  params: ResponseParams,
): Promise<{ port: number; close(): Promise<void> }> {
  const server = http.createServer((request, response) => {
    request.resume();
    request.once("end", async () => {
      response.writeHead(200, {
        "content-type": "text/event-stream",
        "cache-control": "no-cache",
        "request-id": "req_bench",
      });
      response.write(
        sse("message_start", {
          type: "message_start",
          message: {
            id: "msg_bench",
            type: "message",
            role: "assistant",
            model: BENCH_MODEL,
            content: [],
            usage: { input_tokens: 25, output_tokens: 1, cache_read_input_tokens: 0 },
          },
        }),
      );
      for (let index = 0; index < params.deltas; index++) {
        await sleep(params.deltaIntervalMs);
        response.write(
          sse("content_block_delta", {
            type: "content_block_delta",
            index: 0,
            delta: { type: "text_delta", text: `word${index} ` },
          }),
        );
      }
      response.write(
        sse("message_delta", {
          type: "message_delta",
          delta: { stop_reason: "end_turn" },
          usage: { output_tokens: params.deltas },
        }),
      );
      response.end(sse("message_stop", { type: "message_stop" }));
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    port: (server.address() as AddressInfo).port,
    close: () => new Promise((resolve) => server.close(() => resolve())),
  };
}

/** envoy.yaml as shipped, minus the access log and rate limit, optionally minus both ext_proc filters. */
function responseConfig(keygatePort: number, upstreamPort: number, extProc: boolean): string {
  const { doc, filters } = benchEnvoyDocument(
    { listenPort: 0, adminPort: 0, keygatePort, upstreamPort },
    (filter) => !extProc && isExtProc(filter),
  );
  if (!filters.some(isExtProc))
    throw new Error("envoy/envoy.yaml has no ext_proc filter to measure");
  return doc.toString({ lineWidth: 0 });
}

interface StreamTiming {
  readonly firstByteMs: number;
  readonly lastByteMs: number;
  readonly complete: boolean;
}

/** One streamed completion through Envoy; times counted from `due`, its scheduled send time. */
function streamOnce(
  url: URL,
  agent: http.Agent,
  authorization: string,
  body: Buffer,
  due: number,
): Promise<StreamTiming | null> {
  return new Promise((resolve) => {
    const request = http.request(
      {
        agent,
        host: url.hostname,
        port: url.port,
        path: REQUEST_PATH,
        method: "POST",
        headers: {
          authorization,
          "content-type": "application/json",
          "content-length": body.length,
        },
      },
      (response) => {
        let firstByteMs = -1;
        let text = "";
        response.setEncoding("utf8");
        response.on("data", (chunk: string) => {
          if (firstByteMs < 0) firstByteMs = performance.now() - due;
          text += chunk;
        });
        response.once("end", () => {
          if (response.statusCode !== 200 || firstByteMs < 0) return resolve(null);
          resolve({
            firstByteMs,
            lastByteMs: performance.now() - due,
            complete: text.includes(MESSAGE_STOP),
          });
        });
      },
    );
    request.once("error", () => resolve(null));
    request.end(body);
  });
}

/**
 * Checks straight to keygate at `rate` per second until `stop()`: the latencies (ms) of
 * those answered with grpc-status 0, and how many were not.
 */
async function checkSideLoad(
  grpcPort: number,
  token: string,
  rate: number,
): Promise<{ stop(): Promise<{ latencies: number[]; failed: number }> }> {
  const channel = await GrpcH2Channel.connect(grpcPort);
  const framed = encodeCheck(token, "bench-side");
  const latencies: number[] = [];
  let failed = 0;
  const pending = new Set<Promise<void>>();
  let running = true;
  const one = () => {
    const started = performance.now();
    const done = channel.callOnce(framed).then(({ grpcStatus }) => {
      if (grpcStatus === 0) latencies.push(performance.now() - started);
      else failed++;
    });
    pending.add(done);
    done.then(() => pending.delete(done));
  };
  const loop = (async () => {
    const started = performance.now();
    for (let index = 0; running; index++) {
      const wait = started + (index * 1000) / rate - performance.now();
      if (wait > 0) await sleep(wait);
      if (running) one();
    }
  })();
  return {
    async stop() {
      running = false;
      await loop;
      await Promise.all(pending);
      channel.close();
      return { latencies: latencies.sort((a, b) => a - b), failed };
    },
  };
}

function p(sorted: readonly number[], q: number): number | null {
  return sorted.length === 0 ? null : round(quantile(sorted, q), 3);
}

/** Fixed-rate streamed requests through one Envoy, with the Check side load meanwhile. */
async function measureRun(
  configuration: ResponseConfiguration,
  envoy: EnvoyProcess,
  keygate: { pid: number; grpcPort: number },
  token: string,
  body: Buffer,
  params: ResponseParams,
  requests: number,
): Promise<{ run: ResponseRun; checks: readonly number[] }> {
  const url = new URL(envoy.url);
  const agent = new http.Agent({ keepAlive: true, maxSockets: 256 });
  const side = await checkSideLoad(keygate.grpcPort, token, params.checkRate);
  const before = processCpuTicks(keygate.pid);
  const started = performance.now();
  const sends: Promise<StreamTiming | null>[] = [];
  for (let index = 0; index < requests; index++) {
    const due = started + (index * 1000) / params.rate;
    const wait = due - performance.now();
    if (wait > 1) await sleep(wait);
    sends.push(streamOnce(url, agent, `Bearer ${token}`, body, due));
  }
  const timings = await Promise.all(sends);
  const after = processCpuTicks(keygate.pid);
  const { latencies: checks, failed: checksFailed } = await side.stop();
  agent.destroy();
  const done = timings.filter((timing): timing is StreamTiming => timing?.complete === true);
  const first = done.map((timing) => timing.firstByteMs).sort((a, b) => a - b);
  const last = done.map((timing) => timing.lastByteMs).sort((a, b) => a - b);
  const cpuUs =
    before === null || after === null || done.length === 0
      ? null
      : round((((after - before) / clockTicks()) * 1e6) / done.length, 1);
  const run: ResponseRun = {
    configuration,
    requests,
    complete: done.length,
    firstByteP50Ms: p(first, 0.5),
    firstByteP99Ms: p(first, 0.99),
    lastByteP50Ms: p(last, 0.5),
    keygateCpuUsPerResponse: cpuUs,
    checkP50Ms: p(checks, 0.5),
    checkP99Ms: p(checks, 0.99),
    checksFailed,
  };
  return { run, checks };
}

const USAGE_RESPONSES = "keygate_usage_responses_total";

/** The usage filter's messages for one Anthropic completion streamed token by token. */
function tokenStreamMessages(): { headers: Buffer; delta: Buffer; last: Buffer } {
  const observing = { observability_mode: true };
  return {
    headers: grpcFrame(
      serializeProcessingRequest({
        ...observing,
        response_headers: {
          headers: {
            headers: [
              { key: ":status", raw_value: Buffer.from("200") },
              { key: "content-type", raw_value: Buffer.from("text/event-stream") },
            ],
          },
        },
        metadata_context: {
          filter_metadata: {
            "envoy.filters.http.ext_authz": stringStruct({
              client_id: "token-stream",
              auth_mode: "known",
            }),
          },
        },
        attributes: {
          "envoy.filters.http.ext_proc": stringStruct({ "response.code_details": "via_upstream" }),
        },
      }),
    ),
    delta: grpcFrame(
      serializeProcessingRequest({
        ...observing,
        response_body: {
          body: Buffer.from(
            sse("content_block_delta", {
              type: "content_block_delta",
              index: 0,
              delta: { type: "text_delta", text: " token" },
            }),
          ),
        },
      }),
    ),
    last: grpcFrame(
      serializeProcessingRequest({
        ...observing,
        response_body: {
          body: Buffer.from(
            sse("message_start", {
              type: "message_start",
              message: { model: BENCH_MODEL, usage: { input_tokens: 9, output_tokens: 1 } },
            }) +
              sse("message_delta", {
                type: "message_delta",
                usage: { output_tokens: 200 },
              }),
          ),
          end_of_stream: true,
        },
      }),
    ),
  };
}

/**
 * keygate's CPU per usage-filter message when many completions stream token by token at
 * once (what a busy Apollo sends), straight to the Process method over one HTTP/2
 * connection as Envoy holds it; each stream must have its usage counted.
 */
async function measureTokenStreams(
  keygate: { pid: number; grpcPort: number; adminPort: number },
  params: ResponseParams,
): Promise<{ cpuUsPerMessage: number | null; uncounted: number }> {
  const messages = tokenStreamMessages();
  const session = http2.connect(`http://127.0.0.1:${keygate.grpcPort}`);
  session.on("error", () => {});
  const counted = (await seriesTotal(keygate.adminPort, USAGE_RESPONSES)) ?? 0;
  const before = processCpuTicks(keygate.pid);
  await Promise.all(
    Array.from({ length: params.tokenStreams }, async () => {
      const stream = session.request({
        ":method": "POST",
        ":path": PROCESS_PATH,
        "content-type": "application/grpc",
        te: "trailers",
      });
      stream.on("error", () => {});
      stream.resume();
      const closed = new Promise((resolve) => stream.once("close", resolve));
      stream.write(messages.headers);
      for (let index = 0; index < params.tokenEvents; index++) {
        await sleep(params.tokenGapMs);
        stream.write(messages.delta);
      }
      stream.end(messages.last);
      await closed;
    }),
  );
  const after = processCpuTicks(keygate.pid);
  session.close();
  // The usage is reported on the turn after the last chunk.
  await sleep(100);
  const uncounted =
    params.tokenStreams -
    (((await seriesTotal(keygate.adminPort, USAGE_RESPONSES)) ?? 0) - counted);
  const perStream = params.tokenEvents + 2;
  return {
    cpuUsPerMessage:
      before === null || after === null
        ? null
        : round((((after - before) / clockTicks()) * 1e6) / (params.tokenStreams * perStream), 1),
    uncounted,
  };
}

function skipped(params: ResponseParams, why: string): ResponseSectionResult {
  return {
    skipped: why,
    params,
    envoyVersion: "",
    configurations: [],
    runs: [],
    usageTokensRecorded: null,
    checkP99PairedRatio: null,
    tokenStreamCpuUsPerMessage: null,
    tokenStreamsUncounted: 0,
    targets: [],
  };
}

function medianOf(
  runs: readonly ResponseRun[],
  pick: (run: ResponseRun) => number | null,
): number | null {
  const values = runs.map(pick).filter((value): value is number => value !== null);
  return values.length === 0 ? null : round(median(values), 3);
}

function summarise(runs: readonly ResponseRun[]): ResponseConfigurationResult[] {
  return RESPONSE_CONFIGURATIONS.map((configuration) => {
    const mine = runs.filter((run) => run.configuration === configuration);
    return {
      configuration,
      firstByteP50Ms: medianOf(mine, (run) => run.firstByteP50Ms),
      firstByteP99Ms: medianOf(mine, (run) => run.firstByteP99Ms),
      lastByteP50Ms: medianOf(mine, (run) => run.lastByteP50Ms),
      keygateCpuUsPerResponse: medianOf(mine, (run) => run.keygateCpuUsPerResponse),
      checkP99Ms: medianOf(mine, (run) => run.checkP99Ms),
      incomplete: mine.reduce((sum, run) => sum + run.requests - run.complete, 0),
    };
  });
}

/**
 * Per repetition, the shipped configuration against ext_authz alone run just before it:
 * the machine drifts between repetitions, so the targets take the median of these pairs.
 */
function pairedMedian(
  runs: readonly ResponseRun[],
  compare: (off: ResponseRun, on: ResponseRun) => number | null,
): number | null {
  const values: number[] = [];
  for (let index = 0; index + 1 < runs.length; index += 2) {
    const [off, on] = [runs[index], runs[index + 1]];
    if (off?.configuration !== RESPONSE_CONFIGURATIONS[0] || on === undefined) continue;
    const value = compare(off, on);
    if (value !== null && Number.isFinite(value)) values.push(value);
  }
  return values.length === 0 ? null : round(median(values), 3);
}

/**
 * Check p99 with the response path over without, each over every side Check of its
 * configuration's runs pooled (5 × 1000 calls). One run's p99 is its tenth-slowest call,
 * which one scheduler hiccup on a shared 2-core machine moves by 2×; pooled, it takes the
 * slowest 1 % of every run at once.
 */
function pooledCheckP99Ratio(
  checks: ReadonlyMap<ResponseConfiguration, readonly number[]>,
): number | null {
  const [off, on] = RESPONSE_CONFIGURATIONS.map((configuration) =>
    [...(checks.get(configuration) ?? [])].sort((a, b) => a - b),
  );
  const offP99 = p(off ?? [], 0.99);
  const onP99 = p(on ?? [], 0.99);
  return offP99 === null || onP99 === null || offP99 === 0 ? null : round(onP99 / offP99, 3);
}

function responseTargets(
  runs: readonly ResponseRun[],
  configurations: readonly ResponseConfigurationResult[],
  checks: ReadonlyMap<ResponseConfiguration, readonly number[]>,
): Target[] {
  const added = pairedMedian(runs, (off, on) =>
    off.firstByteP50Ms === null || on.firstByteP50Ms === null
      ? null
      : on.firstByteP50Ms - off.firstByteP50Ms,
  );
  const checkRatio = pooledCheckP99Ratio(checks);
  const incomplete = configurations.reduce((sum, c) => sum + c.incomplete, 0);
  const checksFailed = runs.reduce((sum, run) => sum + run.checksFailed, 0);
  return [
    target(
      "response path: added time to first streamed byte, p50 (median of paired runs)",
      added,
      "<=",
      1,
      "ms",
    ),
    target(
      "response path: Check p99 with ext_proc and usage accounting / without (every run's side Checks pooled)",
      checkRatio,
      "<=",
      1.25,
      "x",
    ),
    target(
      "response path: streamed responses that did not arrive whole",
      incomplete,
      "<=",
      0,
      "responses",
    ),
    target("response path: side Checks not answered OK", checksFailed, "<=", 0, "calls"),
  ];
}

function messagesStreamBody(): Buffer {
  return Buffer.from(
    JSON.stringify({
      model: BENCH_MODEL,
      max_tokens: 256,
      stream: true,
      messages: [{ role: "user", content: "Write one short sentence." }],
    }),
  );
}

/** A metric summed over all its labelled series on keygate's /metrics (null: none). */
async function seriesTotal(adminPort: number, name: string): Promise<number | null> {
  const text = await (await fetch(`http://127.0.0.1:${adminPort}/metrics`)).text();
  let total: number | null = null;
  for (const match of text.matchAll(new RegExp(`^${name}\\{[^}]*\\} ([0-9.e+]+)$`, "gm"))) {
    total = (total ?? 0) + Number(match[1]);
  }
  return total;
}

export async function runResponseSection(
  params: ResponseParams,
  log: (line: string) => void,
): Promise<ResponseSectionResult> {
  const envoyBin = findEnvoy();
  if (envoyBin === undefined) return skipped(params, "Envoy not found (npm run install-envoy)");
  const fixture = generateKeystore(1, "response");
  const client = fixture.clients[0];
  if (client === undefined) throw new Error("keystore fixture without a client");
  const provider = await startStreamingProvider(params);
  const keygate = await startKeygateChild({
    keystorePath: fixture.keystorePath,
    dbPath: fixture.dbPath,
    masterKey: fixture.masterKeySpec,
    logLevel: "warn",
  });
  const envoys = new Map<ResponseConfiguration, EnvoyProcess>();
  const runs: ResponseRun[] = [];
  const checks = new Map<ResponseConfiguration, number[]>(
    RESPONSE_CONFIGURATIONS.map((configuration) => [configuration, []]),
  );
  const body = messagesStreamBody();
  try {
    for (const configuration of RESPONSE_CONFIGURATIONS) {
      const config = responseConfig(
        keygate.grpcPort,
        provider.port,
        configuration === "ext_authz + ext_proc",
      );
      envoys.set(configuration, await startEnvoy({ config, envoyBin }));
    }
    const envoyVersion =
      (await envoys.get(RESPONSE_CONFIGURATIONS[0])?.admin("/server_info"))?.match(
        /"version": "([^"]+)"/,
      )?.[1] ?? "unknown";
    for (const [configuration, envoy] of envoys) {
      log(`response: warm-up ${configuration}`);
      await measureRun(
        configuration,
        envoy,
        keygate,
        client.token,
        body,
        params,
        params.warmupRequests,
      );
    }
    const requests = Math.round(params.rate * params.seconds);
    for (let repetition = 0; repetition < params.repetitions; repetition++) {
      for (const configuration of RESPONSE_CONFIGURATIONS) {
        const envoy = envoys.get(configuration);
        if (envoy === undefined) continue;
        await awaitQuiet();
        const { run, checks: latencies } = await measureRun(
          configuration,
          envoy,
          keygate,
          client.token,
          body,
          params,
          requests,
        );
        checks.get(configuration)?.push(...latencies);
        log(
          `response: ${configuration} #${repetition + 1}: first byte p50 ${run.firstByteP50Ms} ms, ` +
            `keygate ${run.keygateCpuUsPerResponse} µs/response, Check p99 ${run.checkP99Ms} ms`,
        );
        runs.push(run);
      }
    }
    log(`response: ${params.tokenStreams} token-by-token streams at once straight to keygate, × 3`);
    const tokenRuns: number[] = [];
    let tokenStreamsUncounted = 0;
    for (let repetition = 0; repetition < 3; repetition++) {
      await awaitQuiet();
      const { cpuUsPerMessage, uncounted } = await measureTokenStreams(keygate, params);
      if (cpuUsPerMessage !== null) tokenRuns.push(cpuUsPerMessage);
      tokenStreamsUncounted += uncounted;
    }
    const configurations = summarise(runs);
    return {
      skipped: null,
      params,
      envoyVersion,
      configurations,
      runs,
      usageTokensRecorded: await seriesTotal(keygate.adminPort, "keygate_usage_tokens_total"),
      checkP99PairedRatio: pairedMedian(runs, (off, on) =>
        off.checkP99Ms === null || on.checkP99Ms === null || off.checkP99Ms === 0
          ? null
          : on.checkP99Ms / off.checkP99Ms,
      ),
      tokenStreamCpuUsPerMessage: tokenRuns.length === 0 ? null : round(median(tokenRuns), 1),
      tokenStreamsUncounted,
      targets: [
        ...responseTargets(runs, configurations, checks),
        target(
          "response path: token-by-token streams whose usage keygate did not count",
          tokenStreamsUncounted,
          "<=",
          0,
          "streams",
        ),
      ],
    };
  } finally {
    for (const envoy of envoys.values()) await envoy.stop();
    await keygate.stop();
    await provider.close();
  }
}

export function responseTable(result: ResponseSectionResult): string[][] {
  return [
    [
      "configuration",
      "first streamed byte p50 ms",
      "first byte p99 ms",
      "last byte p50 ms",
      "keygate CPU µs per streamed response (its Check and the side Checks included)",
      "direct Check p99 ms meanwhile",
      "incomplete",
    ],
    ...result.configurations.map((c) => [
      c.configuration,
      String(c.firstByteP50Ms ?? "n/a"),
      String(c.firstByteP99Ms ?? "n/a"),
      String(c.lastByteP50Ms ?? "n/a"),
      String(c.keygateCpuUsPerResponse ?? "n/a"),
      String(c.checkP99Ms ?? "n/a"),
      String(c.incomplete),
    ]),
  ];
}
