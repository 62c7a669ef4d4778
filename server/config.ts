/**
 * Configuration: environment variables validated once at start-up against
 * schemas/config.schema.json, cross-checked, turned into derived values and frozen.
 * Nothing on the request path reads the environment.
 */
import { readFileSync } from "node:fs";
import { MasterKeyError, type MasterKeys, parseMasterKeys } from "./crypto/aes-gcm.js";
import { compiledValidator } from "./paths.js";

export const MODES = ["enforce", "recognize", "dry-run", "off"] as const;
export type Mode = (typeof MODES)[number];

export type ListenAddress =
  | { readonly kind: "tcp"; readonly host: string; readonly port: number }
  | { readonly kind: "unix"; readonly path: string };

export interface Config {
  readonly keystorePath: string;
  /** Whether KEYGATE_KEYSTORE was set: an explicit path is never created (fail closed). */
  readonly keystoreExplicit: boolean;
  readonly dbPath: string;
  readonly grpcAddress: ListenAddress;
  readonly adminAddress: { readonly host: string; readonly port: number };
  readonly mode: Mode;
  readonly upstreamHeader: string;
  readonly clientIdHeader: string;
  readonly masterKeys: MasterKeys;
  readonly logLevel: string;
  readonly metadataUpstreamKey: boolean;
  readonly grpcMaxReceiveBytes: number;
  readonly drainTimeoutMs: number;
  /** TLS on the gRPC listener, or null for plaintext (loopback or a unix socket only). */
  readonly grpcTls: GrpcTlsFiles | null;
  /** When set, `env:` upstream keys must name a variable with this prefix. */
  readonly upstreamEnvPrefix: string | null;
  readonly throttle: ThrottleSettings;
  /** KEYGATE_USAGE_REDIS_URL: shared budget counters, or null for local counts only. May hold a password: never log it. */
  readonly usageRedisUrl: string | null;
}

/** Paths of the PEM files for the gRPC listener; re-read when they change. */
export interface GrpcTlsFiles {
  readonly certPath: string;
  readonly keyPath: string;
  /** Set for mutual TLS: clients must present a certificate signed by this CA. */
  readonly clientCaPath: string | null;
}

/** Brute-force throttling of failed credentials per request source. */
export interface ThrottleSettings {
  /** Failures allowed per source per window; 0 is off. */
  readonly failures: number;
  readonly windowMs: number;
  /** x-forwarded-for hops (from the right) that are trusted proxies; 0 uses Envoy's peer address. */
  readonly trustedHops: number;
}

/**
 * The variables as the schema leaves them: defaults filled in, numbers and booleans read
 * from their text. Absent optional variables mean the feature is off.
 */
interface ConfigVariables {
  readonly KEYGATE_KEYSTORE: string;
  readonly KEYGATE_DB: string;
  readonly KEYGATE_GRPC_ADDR: string;
  readonly KEYGATE_ADMIN_ADDR: string;
  readonly KEYGATE_MODE: Mode;
  readonly KEYGATE_UPSTREAM_HEADER: string;
  readonly KEYGATE_CLIENT_ID_HEADER: string;
  readonly KEYGATE_LOG_LEVEL: string;
  readonly KEYGATE_METADATA_UPSTREAM_KEY: boolean;
  readonly KEYGATE_GRPC_MAX_RECEIVE_BYTES: number;
  readonly KEYGATE_DRAIN_TIMEOUT_MS: number;
  readonly KEYGATE_THROTTLE_FAILURES: number;
  readonly KEYGATE_THROTTLE_WINDOW_S: number;
  readonly KEYGATE_XFF_TRUSTED_HOPS: number;
  readonly KEYGATE_MASTER_KEY?: string;
  readonly KEYGATE_MASTER_KEY_FILE?: string;
  readonly KEYGATE_GRPC_TLS_CERT?: string;
  readonly KEYGATE_GRPC_TLS_KEY?: string;
  readonly KEYGATE_GRPC_TLS_CLIENT_CA?: string;
  readonly KEYGATE_UPSTREAM_ENV_PREFIX?: string;
  readonly KEYGATE_USAGE_REDIS_URL?: string;
}

/** Headers keygate itself uses to find credentials; the configured headers must not collide with them unexpectedly. */
const RESERVED_HEADERS = new Set(["authorization", "host", "content-type", "content-length"]);

/** Variables whose values are never echoed in an error: key material, a URL with a password. */
const SECRET_VARIABLES = new Set([
  "KEYGATE_MASTER_KEY",
  "KEYGATE_MASTER_KEY_FILE",
  "KEYGATE_USAGE_REDIS_URL",
]);

/** A configuration problem, always naming the variable; its message is the one line printed at start-up. */
export class ConfigError extends Error {
  readonly variable: string;
  constructor(variable: string, problem: string) {
    super(`${variable}: ${problem}`);
    this.name = "ConfigError";
    this.variable = variable;
  }
}

// Compiled at build time with defaults filled in, numbers coerced from the environment's
// strings, and verbose errors: an error carries the property's schema, so its errorMessage
// (the line printed when its value breaks any of its rules) can be shown.
const validateEnv = compiledValidator<ConfigVariables>("config");

function pickKeygateVars(env: NodeJS.ProcessEnv): Record<string, string> {
  const picked: Record<string, string> = {};
  for (const [name, value] of Object.entries(env)) {
    if (name.startsWith("KEYGATE_") && value !== undefined && value !== "") picked[name] = value;
  }
  return picked;
}

/** The first schema error as one line naming the variable; `given` is the text as set. */
function describeSchemaError(given: Readonly<Record<string, string>>): ConfigError {
  const error = validateEnv.errors?.[0];
  if (!error) return new ConfigError("KEYGATE_*", "invalid configuration");
  if (error.keyword === "additionalProperties" || error.keyword === "propertyNames") {
    const name = String(error.params.additionalProperty ?? error.params.propertyName ?? "");
    const known = Object.keys(error.parentSchema?.properties ?? {}).join(", ");
    return new ConfigError(name, `unknown variable (known: ${known})`);
  }
  const variable = error.instancePath.slice(1);
  // Never echo key material or a Redis password back, even in an error.
  const shown = SECRET_VARIABLES.has(variable) ? "" : ` (got ${JSON.stringify(given[variable])})`;
  const problem =
    error.keyword === "enum"
      ? `must be one of ${error.params.allowedValues.join(", ")}`
      : String(error.parentSchema?.errorMessage ?? error.message);
  return new ConfigError(variable, `${problem}${shown}`);
}

function parseHostPort(variable: string, value: string): { host: string; port: number } {
  const colon = value.lastIndexOf(":");
  const host = value.slice(0, colon).replace(/^\[(.*)\]$/, "$1");
  const port = Number(value.slice(colon + 1));
  if (!Number.isInteger(port) || port < 0 || port > 65535) {
    throw new ConfigError(variable, `port must be 0-65535 (got ${JSON.stringify(value)})`);
  }
  return { host, port };
}

function parseGrpcAddress(value: string): ListenAddress {
  if (value.startsWith("unix:"))
    return { kind: "unix", path: value.slice("unix:".length).replace(/^\/\/(?=\/)/, "") };
  return { kind: "tcp", ...parseHostPort("KEYGATE_GRPC_ADDR", value) };
}

function loadMasterKeys(vars: ConfigVariables): MasterKeys {
  const inline = vars.KEYGATE_MASTER_KEY;
  const file = vars.KEYGATE_MASTER_KEY_FILE;
  if (inline !== undefined && file !== undefined) {
    throw new ConfigError(
      "KEYGATE_MASTER_KEY_FILE",
      "set either KEYGATE_MASTER_KEY or KEYGATE_MASTER_KEY_FILE, not both",
    );
  }
  let spec = inline;
  let variable = "KEYGATE_MASTER_KEY";
  if (file !== undefined) {
    variable = "KEYGATE_MASTER_KEY_FILE";
    try {
      spec = readFileSync(file, "utf8");
    } catch (error) {
      throw new ConfigError(
        variable,
        `cannot read ${file}: ${error instanceof Error && "code" in error ? error.code : "error"}`,
      );
    }
  }
  if (spec === undefined) return new Map();
  try {
    return parseMasterKeys(spec);
  } catch (error) {
    if (error instanceof MasterKeyError) throw new ConfigError(variable, error.message);
    throw error;
  }
}

/** The Redis URL, checked as a URL (the schema only checks its scheme); null when unset. */
function loadRedisUrl(vars: ConfigVariables): string | null {
  const url = vars.KEYGATE_USAGE_REDIS_URL;
  if (url === undefined) return null;
  if (!URL.canParse(url) || new URL(url).hostname === "")
    throw new ConfigError(
      "KEYGATE_USAGE_REDIS_URL",
      "must be a redis:// or rediss:// URL with a host, e.g. redis://redis:6379/0",
    );
  return url;
}

function loadGrpcTls(vars: ConfigVariables): GrpcTlsFiles | null {
  const cert = vars.KEYGATE_GRPC_TLS_CERT;
  const key = vars.KEYGATE_GRPC_TLS_KEY;
  const clientCa = vars.KEYGATE_GRPC_TLS_CLIENT_CA;
  if (cert === undefined && key === undefined) {
    if (clientCa !== undefined)
      throw new ConfigError(
        "KEYGATE_GRPC_TLS_CLIENT_CA",
        "mutual TLS needs KEYGATE_GRPC_TLS_CERT and KEYGATE_GRPC_TLS_KEY too",
      );
    return null;
  }
  if (cert === undefined)
    throw new ConfigError("KEYGATE_GRPC_TLS_CERT", "must be set with KEYGATE_GRPC_TLS_KEY");
  if (key === undefined)
    throw new ConfigError("KEYGATE_GRPC_TLS_KEY", "must be set with KEYGATE_GRPC_TLS_CERT");
  return Object.freeze({ certPath: cert, keyPath: key, clientCaPath: clientCa ?? null });
}

/**
 * Reads and validates keygate's configuration.
 * @throws ConfigError naming the first bad variable.
 */
export function loadConfig(env: NodeJS.ProcessEnv): Config {
  const given = pickKeygateVars(env);
  // The schema fills in defaults and converts numbers and booleans in the object it checks.
  const vars: Record<string, unknown> = { ...given };
  if (!validateEnv(vars)) throw describeSchemaError(given);
  const upstreamHeader = vars.KEYGATE_UPSTREAM_HEADER;
  const clientIdHeader = vars.KEYGATE_CLIENT_ID_HEADER;
  for (const [variable, header] of [
    ["KEYGATE_UPSTREAM_HEADER", upstreamHeader],
    ["KEYGATE_CLIENT_ID_HEADER", clientIdHeader],
  ] as const) {
    if (RESERVED_HEADERS.has(header) || header.startsWith(":")) {
      throw new ConfigError(variable, `"${header}" is reserved; choose another header`);
    }
  }
  if (upstreamHeader === clientIdHeader) {
    throw new ConfigError("KEYGATE_CLIENT_ID_HEADER", "must differ from KEYGATE_UPSTREAM_HEADER");
  }
  if (vars.KEYGATE_UPSTREAM_ENV_PREFIX?.toUpperCase().startsWith("KEYGATE_")) {
    throw new ConfigError(
      "KEYGATE_UPSTREAM_ENV_PREFIX",
      "may not start with KEYGATE_: keygate's own variables are never upstream keys",
    );
  }
  return Object.freeze({
    keystorePath: vars.KEYGATE_KEYSTORE,
    keystoreExplicit: given.KEYGATE_KEYSTORE !== undefined,
    dbPath: vars.KEYGATE_DB,
    grpcAddress: Object.freeze(parseGrpcAddress(vars.KEYGATE_GRPC_ADDR)),
    adminAddress: Object.freeze(parseHostPort("KEYGATE_ADMIN_ADDR", vars.KEYGATE_ADMIN_ADDR)),
    mode: vars.KEYGATE_MODE,
    upstreamHeader,
    clientIdHeader,
    masterKeys: loadMasterKeys(vars),
    logLevel: vars.KEYGATE_LOG_LEVEL,
    metadataUpstreamKey: vars.KEYGATE_METADATA_UPSTREAM_KEY,
    grpcMaxReceiveBytes: vars.KEYGATE_GRPC_MAX_RECEIVE_BYTES,
    drainTimeoutMs: vars.KEYGATE_DRAIN_TIMEOUT_MS,
    grpcTls: loadGrpcTls(vars),
    upstreamEnvPrefix: vars.KEYGATE_UPSTREAM_ENV_PREFIX ?? null,
    throttle: Object.freeze({
      failures: vars.KEYGATE_THROTTLE_FAILURES,
      windowMs: vars.KEYGATE_THROTTLE_WINDOW_S * 1000,
      trustedHops: vars.KEYGATE_XFF_TRUSTED_HOPS,
    }),
    usageRedisUrl: loadRedisUrl(vars),
  });
}
