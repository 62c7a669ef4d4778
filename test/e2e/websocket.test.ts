/**
 * WebSocket upgrades through the real Envoy running envoy/envoy.yaml: the /ws/ route
 * enables upgrades, ext_authz checks the upgrade request (headers only, no body), and the
 * upstream (a Node server handling 'upgrade') sees keygate's swap. Node 20 has no
 * WebSocket client, so the upgrade is a plain http.request with the RFC 6455 headers.
 */
import { randomBytes } from "node:crypto";
import { mkdtempSync, writeFileSync } from "node:fs";
import { type IncomingMessage, request } from "node:http";
import type { Socket } from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";
import anyTest, { type TestFn } from "ava";
import { mintToken } from "../../server/crypto/token-format.js";
import { hashToken } from "../../server/crypto/token-hash.js";
import { DENIAL_TYPES } from "../../server/errors.js";
import {
  registerTopologyTeardown,
  startKeygateBehindEnvoy,
  type TopologyContext,
} from "../helpers/e2e-topology.js";
import { type EnvoyProcess, requireEnvoy } from "../helpers/envoy.js";
import type { KeygateProcess } from "../helpers/keygate-process.js";
import type { StubUpstream } from "../helpers/stub-upstream.js";
import { startWebSocketUpstream, websocketAccept } from "../helpers/websocket-upstream.js";

const UPSTREAM_KEY = "sk-ant-upstream-for-websocket-0001";

interface Context extends TopologyContext {
  dir: string;
  token: string;
  upstream: StubUpstream;
  keygate: KeygateProcess;
  envoy: EnvoyProcess;
}

const test = anyTest as TestFn<Context>;

test.before(async (t) => {
  requireEnvoy(t);
  const dir = mkdtempSync(path.join(tmpdir(), "keygate-e2e-ws-"));
  t.context.dir = dir;
  t.context.token = mintToken();
  const keystore = path.join(dir, "keystore.yaml");
  writeFileSync(
    keystore,
    `version: 1
clients:
  - id: socket-client
    tokens:
      - sha256: ${hashToken(t.context.token)}
    upstream_key: env:KG_WS_UPSTREAM
`,
    { mode: 0o600 },
  );
  t.context.upstream = await startWebSocketUpstream();
  await startKeygateBehindEnvoy(t.context, {
    dir,
    keystore,
    upstreamPort: t.context.upstream.port,
    env: { KG_WS_UPSTREAM: UPSTREAM_KEY },
  });
});

registerTopologyTeardown(test);

type UpgradeResult =
  | { readonly kind: "upgraded"; readonly response: IncomingMessage; readonly socket: Socket }
  | {
      readonly kind: "refused";
      readonly status: number;
      readonly headers: IncomingMessage["headers"];
      readonly body: string;
    };

/** Sends a WebSocket upgrade request through Envoy. */
function upgrade(envoy: EnvoyProcess, urlPath: string, headers: Record<string, string> = {}) {
  const key = randomBytes(16).toString("base64");
  const marker = randomBytes(8).toString("hex");
  const result = new Promise<UpgradeResult>((resolve, reject) => {
    const req = request(`${envoy.url}${urlPath}`, {
      headers: {
        connection: "Upgrade",
        upgrade: "websocket",
        "sec-websocket-key": key,
        "sec-websocket-version": "13",
        "x-e2e-case": marker,
        ...headers,
      },
    });
    req.once("upgrade", (response, socket) => resolve({ kind: "upgraded", response, socket }));
    req.once("response", (response) => {
      const chunks: Buffer[] = [];
      response.on("data", (chunk: Buffer) => chunks.push(chunk));
      response.once("end", () =>
        resolve({
          kind: "refused",
          status: response.statusCode ?? 0,
          headers: response.headers,
          body: Buffer.concat(chunks).toString("utf8"),
        }),
      );
    });
    req.once("error", reject);
    req.end();
  });
  return { key, marker, result };
}

/** Writes bytes into the tunnel and resolves with what comes back. */
function roundTrip(socket: Socket, payload: string): Promise<string> {
  return new Promise((resolve, reject) => {
    let received = "";
    const onData = (chunk: Buffer) => {
      received += chunk.toString("utf8");
      if (received.length >= payload.length) {
        socket.off("data", onData);
        resolve(received);
      }
    };
    socket.on("data", onData);
    socket.once("error", reject);
    socket.write(payload);
  });
}

test.serial(
  "curl -H 'Upgrade: websocket' -H 'Authorization: Bearer <token>' /ws/… → 101, the upstream sees the swap",
  async (t) => {
    const { key, marker, result } = upgrade(t.context.envoy, "/ws/v1/stream", {
      authorization: `Bearer ${t.context.token}`,
    });
    const outcome = await result;
    if (outcome.kind !== "upgraded") {
      t.fail(`expected 101, got ${outcome.status}: ${outcome.body}`);
      return;
    }
    t.teardown(() => outcome.socket.destroy());
    t.is(outcome.response.statusCode, 101);
    t.is(outcome.response.headers["sec-websocket-accept"], websocketAccept(key));
    t.is(await roundTrip(outcome.socket, "ping through the tunnel"), "ping through the tunnel");

    const seen = t.context.upstream.requests.filter((r) => r.headers["x-e2e-case"] === marker);
    t.is(seen.length, 1);
    const headers = seen[0]?.headers ?? {};
    t.is(headers["x-api-key"], UPSTREAM_KEY);
    t.is(headers["x-client-id"], "socket-client");
    t.is(headers.authorization, undefined, "the keygate token never reaches the upstream");
    t.false(JSON.stringify(headers).includes(t.context.token));
    t.is(String(headers.upgrade).toLowerCase(), "websocket");
  },
);

test.serial(
  "an upgrade without a token is refused 401 with the JSON denial and never reaches the upstream",
  async (t) => {
    const { marker, result } = upgrade(t.context.envoy, "/ws/v1/stream");
    const outcome = await result;
    if (outcome.kind !== "refused") {
      outcome.socket.destroy();
      t.fail("an upgrade without a credential was accepted");
      return;
    }
    t.is(outcome.status, 401);
    t.regex(String(outcome.headers["content-type"]), /^application\/json/);
    const body = JSON.parse(outcome.body) as { type: string; message: string };
    t.is(body.type, "UNAUTHORIZED");
    t.is(body.message, DENIAL_TYPES.UNAUTHORIZED.message);
    t.is(t.context.upstream.requests.filter((r) => r.headers["x-e2e-case"] === marker).length, 0);
  },
);

test.serial("an Upgrade header on a route without WebSocket is not upgraded", async (t) => {
  const { result } = upgrade(t.context.envoy, "/v1/messages", {
    authorization: `Bearer ${t.context.token}`,
  });
  const outcome = await result;
  if (outcome.kind === "upgraded") outcome.socket.destroy();
  t.is(outcome.kind, "refused");
  t.not(outcome.kind === "refused" ? outcome.status : 101, 101);
});
