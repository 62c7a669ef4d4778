/**
 * The response path through the real Envoy running envoy/envoy.yaml: a provider stub plays
 * recorded Anthropic and OpenAI answers, Envoy's two ext_proc filters show them to the
 * real keygate process, and the client sees what keygate made of them: typed JSON for a
 * held key's provider failures, everything else untouched, a Server-Sent Events stream
 * delivered as it is produced, and the usage keygate read reported (its debug log line).
 */
import { mkdtempSync, writeFileSync } from "node:fs";
import { request } from "node:http";
import { tmpdir } from "node:os";
import path from "node:path";
import { Ajv } from "ajv";
import anyTest, { type TestFn } from "ava";
import { parseDocument } from "yaml";
import { hashToken } from "../../server/crypto/token-hash.js";
import { PROVIDER_ERROR_TYPES } from "../../server/errors.js";
import { readSchema } from "../../server/paths.js";
import { runKeygate } from "../cli/run-keygate.js";
import {
  accessLogLine,
  registerTopologyTeardown,
  type TopologyContext,
} from "../helpers/e2e-topology.js";
import {
  type EnvoyProcess,
  renderEnvoyConfig,
  requireEnvoy,
  startEnvoy,
} from "../helpers/envoy.js";
import { type KeygateProcess, startKeygate } from "../helpers/keygate-process.js";
import {
  ANTHROPIC_SSE_EVENTS,
  PROVIDER_SECRET_MARKER,
  type ProviderStub,
  SCRIPTS,
  startProviderStub,
} from "../helpers/provider-stub.js";

const UPSTREAM_KEY = "sk-ant-upstream-held-by-keygate-0009";
const BYO_KEY = "sk-ant-api03-callers-own-key-0010";
const ACME_TOKEN = "kg-e2e-response-path-acme-token";
const INTERNAL_TOKEN = "kg-e2e-response-path-internal-token";

interface Context extends TopologyContext {
  provider: ProviderStub;
  keygate: KeygateProcess;
  envoy: EnvoyProcess;
}

const test = anyTest as TestFn<Context>;
const validateBody = new Ajv().compile(readSchema("denial.schema.json"));

test.before(async (t) => {
  requireEnvoy(t);
  const dir = mkdtempSync(path.join(tmpdir(), "keygate-response-path-"));
  t.context.dir = dir;
  const keystore = path.join(dir, "keystore.yaml");
  writeFileSync(
    keystore,
    `version: 1
clients:
  - id: acme
    tokens:
      - sha256: ${hashToken(ACME_TOKEN)}
    upstream_key: env:KG_TEST_UPSTREAM
  - id: ops-bot
    kind: internal
    tokens:
      - sha256: ${hashToken(INTERNAL_TOKEN)}
`,
  );
  t.context.provider = await startProviderStub();
  // Stored before Envoy starts so that the teardown stops each process whatever fails next.
  t.context.keygate = await startKeygate({
    keystore,
    db: path.join(dir, "keystore.db"),
    logLevel: "debug",
    env: { KG_TEST_UPSTREAM: UPSTREAM_KEY },
  });
  t.context.envoy = await startEnvoy({
    config: renderEnvoyConfig({
      listenPort: 0,
      adminPort: 0,
      keygatePort: t.context.keygate.grpcPort,
      upstreamPort: t.context.provider.port,
    }),
  });
});

registerTopologyTeardown(test);
test.after.always(async (t) => {
  await t.context.provider?.close();
});

/** The whole body a script sends. */
function scriptText(name: string): string {
  return (SCRIPTS[name]?.parts ?? []).map((part) => part.text).join("");
}

interface Received {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: string;
  /** performance.now() when each body chunk arrived. */
  chunkAt: { at: number; text: string }[];
}

function send(
  envoy: EnvoyProcess,
  play: string,
  options: { path?: string; headers?: Record<string, string> } = {},
): Promise<Received> {
  return new Promise((resolve, reject) => {
    const req = request(
      `${envoy.url}${options.path ?? "/v1/messages"}`,
      {
        method: "POST",
        headers: {
          "content-type": "application/json",
          "x-play": play,
          authorization: `Bearer ${ACME_TOKEN}`,
          ...options.headers,
        },
      },
      (res) => {
        const chunkAt: Received["chunkAt"] = [];
        res.on("data", (chunk: Buffer) =>
          chunkAt.push({ at: performance.now(), text: chunk.toString("utf8") }),
        );
        res.on("end", () =>
          resolve({
            status: res.statusCode ?? 0,
            headers: res.headers,
            body: chunkAt.map((c) => c.text).join(""),
            chunkAt,
          }),
        );
        res.on("error", reject);
      },
    );
    req.on("error", reject);
    req.end(JSON.stringify({ model: "claude-sonnet-4-5", max_tokens: 16, messages: [] }));
  });
}

function typedBody(
  t: { true(v: boolean, m?: string): void },
  received: Received,
): Record<string, unknown> {
  t.true(
    String(received.headers["content-type"]).startsWith("application/json"),
    "JSON content type",
  );
  const body = JSON.parse(received.body) as Record<string, unknown>;
  t.true(validateBody(body), JSON.stringify(validateBody.errors));
  t.true(!received.body.includes(PROVIDER_SECRET_MARKER), "the provider's body never leaks");
  t.true(!received.body.includes(UPSTREAM_KEY), "the held key never leaks");
  return body;
}

test.serial("a held key's 401 from the provider reaches the client as AUTH_ERROR", async (t) => {
  const received = await send(t.context.envoy, "anthropic-401");
  t.is(received.status, PROVIDER_ERROR_TYPES.AUTH_ERROR.httpStatus);
  const body = typedBody(t, received);
  t.like(body, {
    type: "AUTH_ERROR",
    message: PROVIDER_ERROR_TYPES.AUTH_ERROR.message,
    provider_request_id: "req_anthropic_401",
    request_id: received.headers["x-request-id"],
  });
  t.truthy(body.request_id);
  // Envoy's access log says who answered: keygate's immediate response, not the provider.
  const line = await accessLogLine(t.context.envoy, String(body.request_id));
  t.log(`access log: ${line.status} ${line.response_code_details}`);
  t.is(line.status, 502);
  t.regex(String(line.response_code_details), /keygate_provider_error/);
  // And operators can count them.
  const metrics = await (
    await fetch(`http://127.0.0.1:${t.context.keygate.adminPort}/metrics`)
  ).text();
  t.regex(metrics, /^keygate_provider_errors_total\{type="AUTH_ERROR"\} [1-9]/m);
});

test.serial("a held key's 429 becomes RATE_LIMIT with the provider's retry-after", async (t) => {
  const received = await send(t.context.envoy, "anthropic-429");
  t.is(received.status, 429);
  const body = typedBody(t, received);
  t.like(body, { type: "RATE_LIMIT", retry_after: 17, provider_request_id: "req_anthropic_429" });
  t.is(received.headers["retry-after"], "17");
});

test.serial(
  "billing errors of both providers become BILLING (the body tells them apart)",
  async (t) => {
    for (const [play, id] of [
      ["anthropic-credit", "req_anthropic_credit"],
      ["openai-429-quota", "req_openai_quota"],
    ] as const) {
      const received = await send(t.context.envoy, play);
      t.is(received.status, PROVIDER_ERROR_TYPES.BILLING.httpStatus, play);
      t.like(typedBody(t, received), { type: "BILLING", provider_request_id: id }, play);
    }
  },
);

test.serial("a held key's ordinary 400 passes untouched, buffered or not", async (t) => {
  const received = await send(t.context.envoy, "anthropic-400");
  t.is(received.status, 400);
  t.is(received.body, scriptText("anthropic-400"));
});

test.serial("a bring-your-own key's 401 passes untouched", async (t) => {
  const received = await send(t.context.envoy, "anthropic-401", {
    path: "/byo/v1/messages",
    headers: { authorization: "", "x-api-key": BYO_KEY },
  });
  t.is(received.status, 401);
  t.is(received.body, scriptText("anthropic-401"));
  t.is(received.headers["request-id"], "req_anthropic_401");
});

test.serial(
  "an SSE completion streams through intact and unbuffered; its usage is read",
  async (t) => {
    const received = await send(t.context.envoy, "anthropic-sse", {
      headers: { accept: "text/event-stream" },
    });
    t.is(received.status, 200);
    t.is(received.body, ANTHROPIC_SSE_EVENTS.join(""));
    const played = t.context.provider.played.filter((p) => p.script === "anthropic-sse").at(-1);
    const lastSent = played?.sentAt.at(-1) ?? 0;
    const firstEvent = received.chunkAt.find((c) => c.text.includes("message_start"));
    t.truthy(firstEvent);
    // The first event reached the client before the provider wrote the last one (~0.9 s later).
    t.true(
      (firstEvent?.at ?? Number.POSITIVE_INFINITY) < lastSent,
      `first ${firstEvent?.at} last ${lastSent}`,
    );
    t.log(`first event after ${((firstEvent?.at ?? 0) - (played?.sentAt[0] ?? 0)).toFixed(1)} ms`);
    const usage = await usageLine(t.context.keygate, "claude-sonnet-4-5");
    t.like(usage, {
      client_id: "acme",
      input_tokens: 25,
      output_tokens: 15,
      cache_read_tokens: 3,
      cache_write_tokens: 7,
    });
    // And where operators see it: the usage counters on /metrics (the ledger's sink).
    const metrics = await (
      await fetch(`http://127.0.0.1:${t.context.keygate.adminPort}/metrics`)
    ).text();
    for (const [kind, tokens] of [
      ["input", 25],
      ["output", 15],
      ["cache_read", 3],
      ["cache_write", 7],
    ] as const)
      t.true(
        metrics.includes(
          `keygate_usage_tokens_total{client="acme",model="claude-sonnet-4-5",kind="${kind}"} ${tokens}`,
        ),
        kind,
      );
  },
);

/** Envoy's ext_proc counters for one of envoy.yaml's two response-path filters. */
async function extProcStat(envoy: EnvoyProcess, filter: string, stat: string): Promise<number> {
  const name = `http.ingress_http.ext_proc.${filter}.${stat}`;
  const text = await envoy.admin(`/stats?filter=${encodeURIComponent(`^${name}$`)}`);
  const match = new RegExp(`^${name.replaceAll(".", "\\.")}: (\\d+)$`, "m").exec(text);
  if (match === null) throw new Error(`Envoy has no stat ${name}`);
  return Number(match[1]);
}

/** A series' value on keygate's /metrics (0 when absent). */
async function keygateMetric(keygate: KeygateProcess, series: string): Promise<number> {
  const text = await (await fetch(`http://127.0.0.1:${keygate.adminPort}/metrics`)).text();
  const line = text.split("\n").find((entry) => entry.startsWith(`${series} `));
  return line === undefined ? 0 : Number(line.slice(series.length + 1));
}

test.serial(
  "the provider-errors filter runs for an upstream's 4xx only; both filters serve /byo/ too",
  async (t) => {
    const { envoy, keygate } = t.context;
    const errorStreams = () => extProcStat(envoy, "provider_errors", "streams_started");
    const usageStreams = () => extProcStat(envoy, "token_usage", "streams_started");
    const errorsBefore = await errorStreams();
    const usageBefore = await usageStreams();
    // (Scripts whose models later tests look up by name are left to them.)
    for (let index = 0; index < 2; index++) t.is((await send(envoy, "anthropic-sse")).status, 200);
    t.is(await errorStreams(), errorsBefore, "a 2xx skips it: the first byte never waits");
    t.is(await usageStreams(), usageBefore + 2, "the usage filter sees every response");
    const overloaded = await send(envoy, "anthropic-529");
    t.is(overloaded.status, 529, "a held key's 5xx passes untouched");
    t.is(overloaded.body, scriptText("anthropic-529"));
    const denied = await send(envoy, "anthropic-401", { headers: { authorization: "" } });
    t.is(denied.status, 401);
    t.is(JSON.parse(denied.body).type, "UNAUTHORIZED", "keygate's own denial, from Envoy");
    t.is(await errorStreams(), errorsBefore, "neither a 5xx nor Envoy's own 4xx opens a stream");
    // /byo/ turns both filters on as well: a kg_ token there gets its held key, so the
    // provider's 401 is typed and a success's usage is counted.
    const typed = await send(envoy, "anthropic-401", { path: "/byo/v1/messages" });
    t.is(typed.status, 502);
    t.is(JSON.parse(typed.body).type, "AUTH_ERROR");
    t.is(await errorStreams(), errorsBefore + 1);
    const series = 'keygate_usage_responses_total{client="acme",model="claude-sonnet-4-5"}';
    const counted = await keygateMetric(keygate, series);
    t.is((await send(envoy, "anthropic-sse", { path: "/byo/v1/messages" })).status, 200);
    for (const deadline = Date.now() + 5000; Date.now() < deadline; ) {
      if ((await keygateMetric(keygate, series)) > counted) break;
      await new Promise((resolve) => setTimeout(resolve, 25));
    }
    t.is(await keygateMetric(keygate, series), counted + 1, "usage counted through /byo/");
  },
);

test.serial("a stream longer than the ext_proc timeout still has its usage counted", async (t) => {
  const received = await send(t.context.envoy, "anthropic-sse-slow");
  t.is(received.status, 200);
  t.is(received.body, scriptText("anthropic-sse-slow"));
  const spread = (received.chunkAt.at(-1)?.at ?? 0) - (received.chunkAt[0]?.at ?? 0);
  t.true(spread > 2000, `the stream lasted ${Math.round(spread)} ms`);
  t.like(await usageLine(t.context.keygate, "claude-slow-stream"), {
    client_id: "acme",
    input_tokens: 25,
    output_tokens: 15,
  });
});

test.serial("usage of a JSON answer is read for an internal client too", async (t) => {
  const received = await send(t.context.envoy, "anthropic-json", {
    headers: { authorization: `Bearer ${INTERNAL_TOKEN}` },
  });
  t.is(received.status, 200);
  t.is(received.body, scriptText("anthropic-json"));
  t.like(await usageLine(t.context.keygate, "claude-haiku-4-5"), {
    client_id: "ops-bot",
    input_tokens: 11,
    output_tokens: 4,
  });
});

test.serial(
  "a caller asking for gzip still gets a body keygate can read: the upstream is asked for identity",
  async (t) => {
    for (const path of ["/v1/messages", "/byo/v1/messages"]) {
      const before = t.context.provider.played.length;
      const received = await send(t.context.envoy, "anthropic-json", {
        path,
        headers: { "accept-encoding": "gzip, br;q=1.0, *;q=0.5" },
      });
      t.is(received.status, 200, path);
      t.is(received.body, scriptText("anthropic-json"), path);
      const played = t.context.provider.played.slice(before);
      t.is(played.length, 1, path);
      t.is(played[0]?.headers["accept-encoding"], "identity", path);
    }
  },
);

test.serial("hostile-sized bodies pass intact and their usage is still read", async (t) => {
  const sse = await send(t.context.envoy, "huge-sse");
  t.is(sse.status, 200);
  t.is(sse.body, scriptText("huge-sse"), "a 2 MiB SSE line and the events after it");
  // The line above the cap is skipped; the usage events after it are still read.
  t.like(await usageLine(t.context.keygate, "claude-huge-sse"), {
    input_tokens: 25,
    output_tokens: 15,
  });
  const json = await send(t.context.envoy, "huge-json");
  t.is(json.status, 200);
  t.is(json.body, scriptText("huge-json"), "a 3 MiB JSON answer");
  // Above the 1 MiB copy, only its start and end are kept: the model and the top-level
  // usage (last in the object) are still read, so a long answer is never free.
  t.like(await usageLine(t.context.keygate, "claude-huge-json"), {
    input_tokens: 1,
    output_tokens: 2,
  });
});

test.serial("the usage lands in SQLite, where keygate usage reports it", async (t) => {
  // The ledger writes every 5 s; keygate usage reads the database the server writes.
  const db = path.join(t.context.dir ?? "", "keystore.db");
  let report: { usage: Record<string, unknown>[] } | undefined;
  for (const deadline = Date.now() + 20_000; Date.now() < deadline; ) {
    const result = await runKeygate(["usage", "--json", "--client", "ops-bot"], {
      env: { KEYGATE_DB: db },
    });
    t.is(result.code, 0, result.stderr);
    report = JSON.parse(result.stdout) as { usage: Record<string, unknown>[] };
    if (report.usage.length > 0) break;
    await new Promise((resolve) => setTimeout(resolve, 500));
  }
  // The internal client's one JSON answer, exactly as the provider reported it.
  t.deepEqual(report?.usage, [
    {
      client: "ops-bot",
      model: "claude-haiku-4-5",
      requests: 1,
      input_tokens: 11,
      output_tokens: 4,
      cache_read_tokens: 0,
      cache_write_tokens: 0,
      total_tokens: 15,
    },
  ]);
});

test.serial(
  "open response streams never use up the Checks' cluster: a new request is still authorized",
  async (t) => {
    // The Checks' cluster squeezed to 2 requests + 2 pending: if the response path's
    // streams shared it (as they did), the 8 held open below would make the next
    // request's Check overflow and fail closed with 503.
    const doc = parseDocument(
      renderEnvoyConfig({
        listenPort: 0,
        adminPort: 0,
        keygatePort: t.context.keygate.grpcPort,
        upstreamPort: t.context.provider.port,
      }),
    );
    const clusters = doc.getIn(["static_resources", "clusters"]) as {
      toJSON(): { name: string }[];
    };
    const index = clusters.toJSON().findIndex((cluster) => cluster.name === "keygate");
    doc.setIn(
      ["static_resources", "clusters", index, "circuit_breakers"],
      doc.createNode({ thresholds: [{ max_requests: 2, max_pending_requests: 2 }] }),
    );
    const envoy = await startEnvoy({ config: doc.toString({ lineWidth: 0 }) });
    try {
      const streams: Promise<Received>[] = [];
      for (let held = 0; held < 8; held++) {
        streams.push(send(envoy, "anthropic-sse"));
        // One Check at a time: each is done in milliseconds; the streams stay open ~1 s.
        await new Promise((resolve) => setTimeout(resolve, 40));
      }
      const next = await send(envoy, "anthropic-json");
      t.is(next.status, 200, next.body);
      t.is(next.body, scriptText("anthropic-json"));
      for (const stream of await Promise.all(streams)) {
        t.is(stream.status, 200);
        t.is(stream.body, scriptText("anthropic-sse"));
      }
    } finally {
      await envoy.stop();
    }
  },
);

test.serial("keygate logs neither the held key nor the provider's error body", (t) => {
  const output = t.context.keygate.output();
  t.false(output.includes(UPSTREAM_KEY));
  t.false(output.includes(PROVIDER_SECRET_MARKER));
  t.false(output.includes(ACME_TOKEN));
});

/** keygate's "response usage" debug line for a model; usage is reported after the body ends. */
async function usageLine(keygate: KeygateProcess, model: string): Promise<Record<string, unknown>> {
  const deadline = Date.now() + 5_000;
  for (;;) {
    const line = keygate
      .logLines()
      .find((entry) => entry.msg === "response usage" && entry.model === model);
    if (line !== undefined) return line;
    if (Date.now() > deadline) throw new Error(`no usage line for ${model}`);
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
}
