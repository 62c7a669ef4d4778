import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import test from "ava";
import { ConfigError, loadConfig, MODES } from "../../server/config.js";
import { generateMasterKey } from "../../server/crypto/aes-gcm.js";
import { readSchema } from "../../server/paths.js";

test("defaults match the documented table", (t) => {
  const config = loadConfig({});
  t.like(config, {
    keystorePath: "./keystore.yaml",
    keystoreExplicit: false,
    dbPath: "./data/keystore.db",
    grpcAddress: { kind: "tcp", host: "127.0.0.1", port: 9191 },
    adminAddress: { host: "127.0.0.1", port: 9192 },
    mode: "enforce",
    upstreamHeader: "x-api-key",
    clientIdHeader: "x-client-id",
    logLevel: "info",
    metadataUpstreamKey: false,
    grpcMaxReceiveBytes: 8 * 1024 * 1024,
    drainTimeoutMs: 10_000,
    grpcTls: null,
    upstreamEnvPrefix: null,
    throttle: { failures: 0, windowMs: 60_000, trustedHops: 0 },
  });
  t.is(config.masterKeys.size, 0);
  t.true(Object.isFrozen(config));
  t.true(Object.isFrozen(config.throttle));
});

test("values are read and derived", (t) => {
  const config = loadConfig({
    KEYGATE_KEYSTORE: "/etc/keygate/keystore.yaml",
    KEYGATE_GRPC_ADDR: "unix:/run/keygate.sock",
    KEYGATE_ADMIN_ADDR: "[::1]:0",
    KEYGATE_MODE: "dry-run",
    KEYGATE_MASTER_KEY: `${generateMasterKey("a")},${generateMasterKey("b")}`,
    KEYGATE_METADATA_UPSTREAM_KEY: "true",
    KEYGATE_GRPC_MAX_RECEIVE_BYTES: "65536",
    KEYGATE_DRAIN_TIMEOUT_MS: "0",
    KEYGATE_THROTTLE_FAILURES: "20",
    KEYGATE_THROTTLE_WINDOW_S: "30",
    KEYGATE_XFF_TRUSTED_HOPS: "1",
    PATH: "/usr/bin",
  });
  t.like(config, {
    keystoreExplicit: true,
    grpcAddress: { kind: "unix", path: "/run/keygate.sock" },
    adminAddress: { host: "::1", port: 0 },
    mode: "dry-run",
    metadataUpstreamKey: true,
    grpcMaxReceiveBytes: 65_536,
    drainTimeoutMs: 0,
    throttle: { failures: 20, windowMs: 30_000, trustedHops: 1 },
  });
  t.deepEqual([...config.masterKeys.keys()], ["a", "b"]);
});

test("loading leaves the environment as it was", (t) => {
  const env = { KEYGATE_DRAIN_TIMEOUT_MS: "5", KEYGATE_MODE: "off" };
  loadConfig(env);
  t.deepEqual(env, { KEYGATE_DRAIN_TIMEOUT_MS: "5", KEYGATE_MODE: "off" });
});

const schema = readSchema("config.schema.json") as {
  properties: Record<string, Record<string, unknown>>;
};

test("the schema's modes are the modes the policy knows", (t) => {
  t.deepEqual(schema.properties.KEYGATE_MODE?.enum, [...MODES]);
});

test("every variable a value can break has its message in the schema", (t) => {
  for (const [variable, property] of Object.entries(schema.properties)) {
    const constrained = ["pattern", "minimum", "maximum"].some((key) => key in property);
    if (constrained || property.type !== "string") {
      t.true(
        "enum" in property || typeof property.errorMessage === "string",
        `${variable} has an enum or an errorMessage`,
      );
    }
  }
});

test("the master key can come from a file", (t) => {
  const dir = mkdtempSync(path.join(tmpdir(), "keygate-config-"));
  const file = path.join(dir, "master.key");
  writeFileSync(file, `${generateMasterKey("k9")}\n`);
  t.deepEqual([...loadConfig({ KEYGATE_MASTER_KEY_FILE: file }).masterKeys.keys()], ["k9"]);
});

const secret = Buffer.alloc(31, 1).toString("base64");
const bad: Array<[string, Record<string, string>, RegExp]> = [
  [
    "unknown mode",
    { KEYGATE_MODE: "enforcing" },
    /^KEYGATE_MODE: must be one of enforce, recognize, dry-run, off \(got "enforcing"\)$/,
  ],
  [
    "an env: prefix inside keygate's own namespace",
    { KEYGATE_UPSTREAM_ENV_PREFIX: "KEYGATE_UP_" },
    /^KEYGATE_UPSTREAM_ENV_PREFIX: may not start with KEYGATE_/,
  ],
  [
    "a TLS certificate without its key",
    { KEYGATE_GRPC_TLS_CERT: "/etc/keygate/tls.crt" },
    /^KEYGATE_GRPC_TLS_KEY: must be set with KEYGATE_GRPC_TLS_CERT$/,
  ],
  [
    "a client CA without a server certificate",
    { KEYGATE_GRPC_TLS_CLIENT_CA: "/etc/keygate/ca.crt" },
    /^KEYGATE_GRPC_TLS_CLIENT_CA: mutual TLS needs/,
  ],
  [
    "a zero throttle window",
    { KEYGATE_THROTTLE_WINDOW_S: "0" },
    /^KEYGATE_THROTTLE_WINDOW_S: must be a whole number of seconds, 1-999999 \(got "0"\)$/,
  ],
  [
    "a throttle limit that is not a number",
    { KEYGATE_THROTTLE_FAILURES: "ten" },
    /^KEYGATE_THROTTLE_FAILURES: must be a whole number of failures, 0-999999 .*\(got "ten"\)$/,
  ],
  [
    "a fractional drain timeout",
    { KEYGATE_DRAIN_TIMEOUT_MS: "1.5" },
    /^KEYGATE_DRAIN_TIMEOUT_MS: must be a whole number of milliseconds/,
  ],
  [
    "a negative hop count",
    { KEYGATE_XFF_TRUSTED_HOPS: "-1" },
    /^KEYGATE_XFF_TRUSTED_HOPS: must be a whole number of proxy hops, 0-99 \(got "-1"\)$/,
  ],
  [
    "a flag that is not true or false",
    { KEYGATE_METADATA_UPSTREAM_KEY: "yes" },
    /^KEYGATE_METADATA_UPSTREAM_KEY: must be true or false \(got "yes"\)$/,
  ],
  [
    "an env: prefix that cannot start a variable name",
    { KEYGATE_UPSTREAM_ENV_PREFIX: "1KEY" },
    /^KEYGATE_UPSTREAM_ENV_PREFIX: must be the start of an environment variable name/,
  ],
  ["bad grpc address", { KEYGATE_GRPC_ADDR: "9191" }, /^KEYGATE_GRPC_ADDR: must be host:port/],
  [
    "port out of range",
    { KEYGATE_ADMIN_ADDR: "127.0.0.1:70000" },
    /^KEYGATE_ADMIN_ADDR: port must be 0-65535/,
  ],
  [
    "upper-case header",
    { KEYGATE_UPSTREAM_HEADER: "X-Api-Key" },
    /^KEYGATE_UPSTREAM_HEADER: must be a lower-case HTTP header name/,
  ],
  [
    "reserved header",
    { KEYGATE_CLIENT_ID_HEADER: "authorization" },
    /^KEYGATE_CLIENT_ID_HEADER: "authorization" is reserved/,
  ],
  [
    "same header twice",
    { KEYGATE_CLIENT_ID_HEADER: "x-api-key" },
    /^KEYGATE_CLIENT_ID_HEADER: must differ/,
  ],
  ["bad log level", { KEYGATE_LOG_LEVEL: "loud" }, /^KEYGATE_LOG_LEVEL: must be one of/],
  [
    "unknown variable (typo)",
    { KEYGATE_MOD: "off" },
    /^KEYGATE_MOD: unknown variable \(known: KEYGATE_KEYSTORE, .*KEYGATE_MODE, .*KEYGATE_MASTER_KEY_FILE, /,
  ],
  [
    "short master key",
    { KEYGATE_MASTER_KEY: `k1:${secret}` },
    /^KEYGATE_MASTER_KEY: key "k1": must be 32 bytes/,
  ],
  [
    "both master key sources",
    { KEYGATE_MASTER_KEY: generateMasterKey("k1"), KEYGATE_MASTER_KEY_FILE: "/x" },
    /^KEYGATE_MASTER_KEY_FILE: set either/,
  ],
  [
    "missing master key file",
    { KEYGATE_MASTER_KEY_FILE: "/nonexistent/master.key" },
    /^KEYGATE_MASTER_KEY_FILE: cannot read .* ENOENT/,
  ],
  [
    "tiny receive size",
    { KEYGATE_GRPC_MAX_RECEIVE_BYTES: "1024" },
    /^KEYGATE_GRPC_MAX_RECEIVE_BYTES: must be at least 65536, .*\(got "1024"\)$/,
  ],
];

for (const [name, env, message] of bad) {
  test(`config error: ${name} names the variable in one line`, (t) => {
    const error = t.throws(() => loadConfig(env), { instanceOf: ConfigError });
    t.regex(error?.message ?? "", message);
    t.false(error?.message.includes("\n"));
    t.false(error?.message.includes(secret), "key material is never echoed");
  });
}

test("empty variables count as unset", (t) => {
  t.is(loadConfig({ KEYGATE_MODE: "" }).mode, "enforce");
});
