/**
 * The gRPC listener with TLS and mutual TLS (KEYGATE_GRPC_TLS_*), with certificates made
 * by `openssl` at test time: real server in-process, real gRPC clients, and raw TLS
 * connections to read which certificate the listener serves after the files change.
 */
import { mkdirSync, mkdtempSync, readFileSync, renameSync, rmSync, symlinkSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { connect } from "node:tls";
import { credentials, type ServiceError, status } from "@grpc/grpc-js";
import test, { type ExecutionContext } from "ava";
import { loadConfig } from "../../server/config.js";
import { hashToken } from "../../server/crypto/token-hash.js";
import { createLogger } from "../../server/logger.js";
import { StartupError, startKeygate } from "../../server/main.js";
import { checkRequest } from "../helpers/check-request.js";
import { type CheckClient, createCheckClient, setHeaders } from "../helpers/grpc-client.js";
import { startTestKeygate, type TestKeygate } from "../helpers/keygate-in-process.js";
import { type IssuedCertificate, issue, makeCa, type Pem } from "../helpers/test-pki.js";

const TOKEN = "kg-tls-test-token";
const UPSTREAM = "sk-ant-upstream-behind-tls";
const KEYSTORE = `version: 1
clients:
  - id: tls-client
    tokens:
      - sha256: ${hashToken(TOKEN)}
    upstream_key: env:KG_TLS_UPSTREAM
`;
/** How long a test waits for a changed certificate to be served. */
const RELOAD_DEADLINE_MS = 5_000;

const pkiDir = mkdtempSync(path.join(tmpdir(), "keygate-tls-pki-"));
const ca = makeCa(pkiDir, "keygate-test-ca");
const otherCa = makeCa(pkiDir, "other-ca");
const server = issue(pkiDir, ca, "keygate-server", "server");
const envoyClient = issue(pkiDir, ca, "envoy-client", "client");
const strangerClient = issue(pkiDir, otherCa, "stranger-client", "client");

test.after.always(() => rmSync(pkiDir, { recursive: true, force: true }));

function tlsEnv(pem: Pem, clientCa?: string): Record<string, string> {
  return {
    KEYGATE_GRPC_TLS_CERT: pem.certPath,
    KEYGATE_GRPC_TLS_KEY: pem.keyPath,
    ...(clientCa === undefined ? {} : { KEYGATE_GRPC_TLS_CLIENT_CA: clientCa }),
    KG_TLS_UPSTREAM: UPSTREAM,
  };
}

/** A gRPC client trusting the test CA, presenting `identity` when given. */
function tlsClient(kg: TestKeygate, identity?: Pem): CheckClient {
  const channel = credentials.createSsl(
    readFileSync(ca.certPath),
    identity ? readFileSync(identity.keyPath) : null,
    identity ? readFileSync(identity.certPath) : null,
  );
  return createCheckClient(`localhost:${kg.running.grpcPort}`, channel);
}

// curl -H 'Authorization: Bearer kg-tls-test-token' http://envoy/v1/messages
const knownTokenCheck = () => checkRequest({ headers: { authorization: `Bearer ${TOKEN}` } });

async function checkFails(t: ExecutionContext, client: CheckClient): Promise<void> {
  const error = (await client.check(knownTokenCheck()).then(
    () => undefined,
    (e: unknown) => e,
  )) as ServiceError | undefined;
  t.is(error?.code, status.UNAVAILABLE);
  client.close();
}

/** The certificate a fresh TLS connection is served (optionally presenting a client certificate). */
function servedCertificate(port: number, identity?: Pem): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = connect({
      host: "127.0.0.1",
      port,
      servername: "localhost",
      ca: readFileSync(ca.certPath),
      ALPNProtocols: ["h2"],
      ...(identity
        ? { cert: readFileSync(identity.certPath), key: readFileSync(identity.keyPath) }
        : {}),
    });
    socket.once("secureConnect", () => {
      const fingerprint = socket.getPeerCertificate().fingerprint256;
      socket.destroy();
      resolve(fingerprint);
    });
    socket.once("error", reject);
  });
}

async function waitForServed(port: number, expected: string, identity?: Pem): Promise<string> {
  const deadline = Date.now() + RELOAD_DEADLINE_MS;
  for (;;) {
    const served = await servedCertificate(port, identity);
    if (served === expected || Date.now() > deadline) return served;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

function logged(kg: TestKeygate, message: RegExp): Record<string, unknown>[] {
  return kg.logs
    .map((line) => JSON.parse(line) as Record<string, unknown>)
    .filter((line) => message.test(String(line.msg)));
}

test("with TLS, a client trusting keygate's CA gets a Check answer and a plaintext client none", async (t) => {
  const kg = await startTestKeygate({ keystore: KEYSTORE, env: tlsEnv(server) });
  t.teardown(() => kg.stop());
  const client = tlsClient(kg);
  t.teardown(() => client.close());

  const response = await client.check(knownTokenCheck());
  t.deepEqual(setHeaders(response), { "x-api-key": UPSTREAM, "x-client-id": "tls-client" });
  t.is(await client.health(), "SERVING");
  // kg.client is the helper's plaintext client.
  await checkFails(t, kg.client);

  const [transport] = logged(kg, /^gRPC serves TLS$/);
  t.is(transport?.transport, "tls");
  t.is(
    (transport?.certificate as { fingerprint256?: string } | undefined)?.fingerprint256,
    server.fingerprint256,
  );
});

test("with mutual TLS, only clients with a certificate from KEYGATE_GRPC_TLS_CLIENT_CA are served", async (t) => {
  const kg = await startTestKeygate({ keystore: KEYSTORE, env: tlsEnv(server, ca.certPath) });
  t.teardown(() => kg.stop());

  const trusted = tlsClient(kg, envoyClient);
  t.teardown(() => trusted.close());
  t.is(setHeaders(await trusted.check(knownTokenCheck()))["x-client-id"], "tls-client");

  await checkFails(t, tlsClient(kg));
  await checkFails(t, tlsClient(kg, strangerClient));
  await checkFails(t, kg.client);
  t.is(logged(kg, /^gRPC serves mutual TLS/)[0]?.transport, "mtls");
});

/**
 * Kubernetes mounts a Secret as `<dir>/tls.crt -> ..data/tls.crt`, `..data -> ..<timestamp>`
 * and updates it by pointing `..data` at a new timestamped directory in one rename.
 */
function secretVolume(root: string) {
  let version = 0;
  const publish = (pem: Pem, clientCa: string) => {
    version += 1;
    const dir = path.join(root, `..v${version}`);
    mkdirSync(dir);
    for (const [name, source] of [
      ["tls.crt", pem.certPath],
      ["tls.key", pem.keyPath],
      ["ca.crt", clientCa],
    ] as const)
      symlinkSync(path.resolve(source), path.join(dir, name));
    symlinkSync(path.basename(dir), path.join(root, "..data_tmp"));
    renameSync(path.join(root, "..data_tmp"), path.join(root, "..data"));
  };
  return {
    publish,
    /** Links at the volume's top, as the kubelet makes them once. */
    link() {
      for (const name of ["tls.crt", "tls.key", "ca.crt"])
        symlinkSync(path.join("..data", name), path.join(root, name));
      return {
        certPath: path.join(root, "tls.crt"),
        keyPath: path.join(root, "tls.key"),
        caPath: path.join(root, "ca.crt"),
      };
    },
  };
}

test("a Secret-style symlink swap is served to new connections; a broken one keeps the old certificate", async (t) => {
  const root = mkdtempSync(path.join(tmpdir(), "keygate-tls-secret-"));
  t.teardown(() => rmSync(root, { recursive: true, force: true }));
  const volume = secretVolume(root);
  volume.publish(server, ca.certPath);
  const mounted = volume.link();
  const kg = await startTestKeygate({
    keystore: KEYSTORE,
    env: tlsEnv({ certPath: mounted.certPath, keyPath: mounted.keyPath }, mounted.caPath),
  });
  t.teardown(() => kg.stop());
  const port = kg.running.grpcPort;
  t.is(await servedCertificate(port, envoyClient), server.fingerprint256);

  // A connection opened before the swap keeps working after it.
  const before = tlsClient(kg, envoyClient);
  t.teardown(() => before.close());
  await before.check(knownTokenCheck());

  const renewed: IssuedCertificate = issue(pkiDir, ca, "keygate-server-renewed", "server");
  t.not(renewed.serialNumber, server.serialNumber);
  volume.publish(renewed, ca.certPath);
  t.is(await waitForServed(port, renewed.fingerprint256, envoyClient), renewed.fingerprint256);
  t.true(logged(kg, /certificate reloaded/).length >= 1);
  await before.check(knownTokenCheck());
  const after = tlsClient(kg, envoyClient);
  t.teardown(() => after.close());
  t.is(setHeaders(await after.check(knownTokenCheck()))["x-client-id"], "tls-client");
  // The new context still requires and verifies client certificates.
  await checkFails(t, tlsClient(kg));
  await checkFails(t, tlsClient(kg, strangerClient));

  // A certificate whose key is another one's: refused, logged, the renewed one still served.
  volume.publish({ certPath: server.certPath, keyPath: renewed.keyPath }, ca.certPath);
  const deadline = Date.now() + RELOAD_DEADLINE_MS;
  while (logged(kg, /cannot be used; keeping/).length === 0 && Date.now() < deadline)
    await new Promise((resolve) => setTimeout(resolve, 50));
  const [refusal] = logged(kg, /cannot be used; keeping/);
  t.is(refusal?.level, "error");
  t.regex(String(refusal?.reason), /KEYGATE_GRPC_TLS_KEY/);
  t.is(await servedCertificate(port, envoyClient), renewed.fingerprint256);
  t.false(
    kg.logs.some((line) => line.includes("PRIVATE KEY")),
    "no key material in the logs",
  );
});

test("a replaced certificate file (rename over it) is served to the next connection", async (t) => {
  const dir = mkdtempSync(path.join(tmpdir(), "keygate-tls-files-"));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const live = { certPath: path.join(dir, "server.crt"), keyPath: path.join(dir, "server.key") };
  const first = issue(dir, ca, "first", "server");
  renameSync(first.certPath, live.certPath);
  renameSync(first.keyPath, live.keyPath);
  const kg = await startTestKeygate({ keystore: KEYSTORE, env: tlsEnv(live) });
  t.teardown(() => kg.stop());
  t.is(await servedCertificate(kg.running.grpcPort), first.fingerprint256);

  const second = issue(dir, ca, "second", "server");
  renameSync(second.keyPath, live.keyPath);
  renameSync(second.certPath, live.certPath);
  t.is(await waitForServed(kg.running.grpcPort, second.fingerprint256), second.fingerprint256);
});

test("unusable TLS files stop start-up with one line naming the variable", async (t) => {
  const dir = mkdtempSync(path.join(tmpdir(), "keygate-tls-bad-"));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const start = (env: Record<string, string>) => {
    const full = {
      KEYGATE_KEYSTORE: path.join(dir, "keystore.yaml"),
      KEYGATE_DB: path.join(dir, "keystore.db"),
      KEYGATE_GRPC_ADDR: "127.0.0.1:0",
      KEYGATE_ADMIN_ADDR: "127.0.0.1:0",
      ...env,
    };
    return startKeygate(loadConfig(full), full, createLogger("silent"));
  };
  const missing = await t.throwsAsync(
    start(tlsEnv({ certPath: path.join(dir, "absent.crt"), keyPath: server.keyPath })),
    { instanceOf: StartupError },
  );
  t.regex(missing?.message ?? "", /^KEYGATE_GRPC_TLS_CERT: cannot read .*absent\.crt: ENOENT$/);
  const mismatched = await t.throwsAsync(
    start(tlsEnv({ certPath: server.certPath, keyPath: envoyClient.keyPath })),
    { instanceOf: StartupError },
  );
  t.regex(mismatched?.message ?? "", /^KEYGATE_GRPC_TLS_KEY: /);
  const notACa = await t.throwsAsync(start(tlsEnv(server, server.keyPath)), {
    instanceOf: StartupError,
  });
  t.regex(notACa?.message ?? "", /^KEYGATE_GRPC_TLS_CLIENT_CA: /);
});

test("plaintext on a network address is logged as a warning, on loopback as info", async (t) => {
  const kg = await startTestKeygate({ keystore: KEYSTORE });
  t.teardown(() => kg.stop());
  const [line] = logged(kg, /^gRPC serves plaintext on a local-only address$/);
  t.is(line?.level, "info");

  const exposed = await startTestKeygate({
    keystore: KEYSTORE,
    env: { KEYGATE_GRPC_ADDR: "0.0.0.0:0" },
  });
  t.teardown(() => exposed.stop());
  const [warning] = logged(exposed, /PLAINTEXT on a network address/);
  t.is(warning?.level, "warn");
  t.is(warning?.transport, "plaintext");
});
