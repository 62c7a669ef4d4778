/**
 * Mutual TLS between the real Envoy and the real keygate process: keygate requires client
 * certificates (KEYGATE_GRPC_TLS_CLIENT_CA), Envoy's keygate cluster gets the
 * UpstreamTlsContext that envoy/envoy.yaml shows in comments, taken from the comment. Certificates are made with
 * `openssl` at test time. An Envoy that presents no certificate must fail closed.
 */
import { randomUUID } from "node:crypto";
import { mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import anyTest, { type TestFn } from "ava";
import { parse } from "yaml";
import { mintToken } from "../../server/crypto/token-format.js";
import { hashToken } from "../../server/crypto/token-hash.js";
import { DENIAL_TYPES } from "../../server/errors.js";
import { registerTopologyTeardown, type TopologyContext } from "../helpers/e2e-topology.js";
import {
  ENVOY_CONFIG_PATH,
  type EnvoyProcess,
  renderEnvoyConfig,
  requireEnvoy,
  startEnvoy,
} from "../helpers/envoy.js";
import { type KeygateProcess, startKeygate } from "../helpers/keygate-process.js";
import { type StubUpstream, startStubUpstream } from "../helpers/stub-upstream.js";
import { type IssuedCertificate, issue, makeCa } from "../helpers/test-pki.js";

const UPSTREAM_KEY = "sk-ant-upstream-over-mtls-0001";
/** The name in keygate's certificate: the SNI and SAN envoy.yaml's comment expects. */
const KEYGATE_NAME = "keygate";
const CASE_HEADER = "x-e2e-case";

interface Context extends TopologyContext {
  dir: string;
  token: string;
  upstream: StubUpstream;
  keygate: KeygateProcess;
  /** Presents a client certificate keygate trusts. */
  envoy: EnvoyProcess;
  /** The same config without a client certificate. */
  bareEnvoy: EnvoyProcess;
}

const test = anyTest as TestFn<Context>;

/**
 * The transport_socket envoy/envoy.yaml shows in comments on the keygate cluster, parsed
 * from the comment itself (so the block users uncomment is the one tested), with the
 * test's files in place of /etc/envoy/tls/... and without the client certificate when
 * `client` is null.
 */
function commentedTransportSocket(
  ca: IssuedCertificate,
  client: IssuedCertificate | null,
): Record<string, unknown> {
  const lines = readFileSync(ENVOY_CONFIG_PATH, "utf8").split("\n");
  const first = lines.findIndex((line) => /^\s*# transport_socket:\s*$/.test(line));
  if (first === -1) throw new Error("envoy.yaml: no commented transport_socket");
  const prefix = (lines[first] ?? "").slice(0, (lines[first] ?? "").indexOf("#") + 2);
  const block: string[] = [];
  for (const line of lines.slice(first)) {
    if (!line.startsWith(prefix)) break;
    block.push(line.slice(prefix.length));
  }
  const files: Record<string, string> = {
    "envoy-client.crt": client?.certPath ?? "",
    "envoy-client.key": client?.keyPath ?? "",
    "keygate-ca.crt": ca.certPath,
  };
  const text = block
    .join("\n")
    .replace(/\/etc\/envoy\/tls\/([\w.-]+)/g, (_, name: string) => files[name] ?? name);
  const socket = (parse(text) as { transport_socket: Record<string, unknown> }).transport_socket;
  if (client === null) {
    const context = (socket.typed_config as { common_tls_context: Record<string, unknown> })
      .common_tls_context;
    delete context.tls_certificates;
  }
  return socket;
}

test.before(async (t) => {
  requireEnvoy(t);
  const dir = mkdtempSync(path.join(tmpdir(), "keygate-e2e-mtls-"));
  t.context.dir = dir;
  const ca = makeCa(dir, "keygate-ca");
  const server = issue(dir, ca, "keygate-server", "server", [KEYGATE_NAME]);
  const envoyClient = issue(dir, ca, "envoy-client", "client");

  t.context.token = mintToken();
  const keystore = path.join(dir, "keystore.yaml");
  writeFileSync(
    keystore,
    `version: 1
clients:
  - id: mtls-client
    tokens:
      - sha256: ${hashToken(t.context.token)}
    upstream_key: env:KG_MTLS_UPSTREAM
`,
    { mode: 0o600 },
  );
  t.context.upstream = await startStubUpstream();
  t.context.keygate = await startKeygate({
    keystore,
    db: path.join(dir, "keystore.db"),
    env: {
      KG_MTLS_UPSTREAM: UPSTREAM_KEY,
      KEYGATE_GRPC_TLS_CERT: server.certPath,
      KEYGATE_GRPC_TLS_KEY: server.keyPath,
      KEYGATE_GRPC_TLS_CLIENT_CA: ca.certPath,
    },
  });
  const ports = {
    listenPort: 0,
    adminPort: 0,
    keygatePort: t.context.keygate.grpcPort,
    upstreamPort: t.context.upstream.port,
  };
  // Healthy keygate cluster = Envoy's gRPC health checks got through mutual TLS.
  t.context.envoy = await startEnvoy({
    config: renderEnvoyConfig({
      ...ports,
      keygateTransportSocket: commentedTransportSocket(ca, envoyClient),
    }),
  });
  // Its health checks cannot pass: wait for the listener and the apollo cluster only.
  t.context.bareEnvoy = await startEnvoy({
    config: renderEnvoyConfig({
      ...ports,
      keygateTransportSocket: commentedTransportSocket(ca, null),
    }),
    healthyCluster: "apollo",
  });
});

test.after.always(async (t) => {
  await t.context.bareEnvoy?.stop();
});
registerTopologyTeardown(test);

async function send(envoy: EnvoyProcess, token?: string) {
  const marker = randomUUID();
  const response = await fetch(`${envoy.url}/v1/messages`, {
    method: "POST",
    headers: {
      "content-type": "application/json",
      [CASE_HEADER]: marker,
      ...(token === undefined ? {} : { authorization: `Bearer ${token}` }),
    },
    body: JSON.stringify({ model: "claude-sonnet-4-5", max_tokens: 8, messages: [] }),
  });
  return { response, text: await response.text(), marker };
}

test("keygate logs that it serves mutual TLS", (t) => {
  const line = t.context.keygate.logLines().find((l) => l.transport === "mtls");
  t.truthy(line, "a start-up line with transport mtls");
});

test("through Envoy with a client certificate, a known token is allowed and swapped", async (t) => {
  const { response, text, marker } = await send(t.context.envoy, t.context.token);
  t.is(response.status, 200, text);
  const seen = t.context.upstream.requests.filter((r) => r.headers[CASE_HEADER] === marker);
  t.is(seen.length, 1);
  t.is(seen[0]?.headers["x-api-key"], UPSTREAM_KEY);
  t.is(seen[0]?.headers["x-client-id"], "mtls-client");
  t.is(seen[0]?.headers.authorization, undefined);
});

test("through Envoy with a client certificate, a missing token is still a 401 from keygate", async (t) => {
  const { response, text } = await send(t.context.envoy);
  t.is(response.status, 401, text);
  t.is((JSON.parse(text) as { type: string }).type, "UNAUTHORIZED");
});

test("an Envoy without a client certificate fails closed: 503 UNAVAILABLE, nothing forwarded", async (t) => {
  const { response, text, marker } = await send(t.context.bareEnvoy, t.context.token);
  t.is(response.status, 503, text);
  t.regex(response.headers.get("content-type") ?? "", /^application\/json/);
  const body = JSON.parse(text) as { type: string; message: string };
  t.is(body.type, "UNAVAILABLE");
  t.is(body.message, DENIAL_TYPES.UNAVAILABLE.message);
  t.is(t.context.upstream.requests.filter((r) => r.headers[CASE_HEADER] === marker).length, 0);
});
