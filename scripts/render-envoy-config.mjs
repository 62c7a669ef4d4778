/**
 * Renders envoy/envoy.yaml for a run on one machine: the listener, the admin interface and
 * the `keygate`, `keygate_response_path` and `apollo` cluster endpoints move to 127.0.0.1
 * and the given ports.
 * Everything else (filters, local replies, health checks, routes) stays what users run.
 * Shared by `npm run stack` and the e2e tests (test/helpers/envoy.ts re-exports it), so
 * the native stack and the tests never drift from the shipped file or from each other.
 *
 * Edits go through the yaml Document API (never text substitution), so comments survive
 * and a renamed key fails loudly instead of being silently skipped.
 */
import { readFileSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { parseDocument } from "yaml";

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");

/** The shipped reference configuration. */
export const ENVOY_CONFIG_PATH = path.join(ROOT, "envoy", "envoy.yaml");

const LOOPBACK = "127.0.0.1";
const HCM_PATH = [
  "static_resources",
  "listeners",
  0,
  "filter_chains",
  0,
  "filters",
  0,
  "typed_config",
];
const RATE_LIMIT_FILTER = "envoy.filters.http.local_ratelimit";
/** The descriptor key the per-client rate limit uses (envoy.yaml's request_headers action). */
const CLIENT_DESCRIPTOR_KEY = "client_id";
const CLUSTER_ENDPOINT_SUFFIX = [
  "load_assignment",
  "endpoints",
  0,
  "lb_endpoints",
  0,
  "endpoint",
  "address",
];

function fail(problem) {
  throw new Error(`envoy.yaml: ${problem}`);
}

function setSocketAddress(doc, nodePath, where, port) {
  const node = doc.getIn(nodePath, true);
  if (typeof node?.setIn !== "function") fail(`${where} not found`);
  node.setIn(["socket_address", "address"], LOOPBACK);
  node.setIn(["socket_address", "port_value"], port);
}

function itemCount(doc, nodePath) {
  const node = doc.getIn(nodePath, true);
  return Array.isArray(node?.items) ? node.items.length : 0;
}

function rewriteClusters(doc, clusterPorts) {
  const seen = new Set();
  const count = itemCount(doc, ["static_resources", "clusters"]);
  for (let index = 0; index < count; index++) {
    const name = doc.getIn(["static_resources", "clusters", index, "name"]);
    if (typeof name !== "string" || !(name in clusterPorts)) continue;
    setSocketAddress(
      doc,
      ["static_resources", "clusters", index, ...CLUSTER_ENDPOINT_SUFFIX],
      `cluster ${name} endpoint`,
      clusterPorts[name],
    );
    seen.add(name);
  }
  for (const name of Object.keys(clusterPorts)) {
    if (!seen.has(name)) fail(`cluster ${name} not found`);
  }
}

function setClusterField(doc, clusterName, key, value) {
  const count = itemCount(doc, ["static_resources", "clusters"]);
  for (let index = 0; index < count; index++) {
    if (doc.getIn(["static_resources", "clusters", index, "name"]) !== clusterName) continue;
    doc.setIn(["static_resources", "clusters", index, key], doc.createNode(value));
    return;
  }
  fail(`cluster ${clusterName} not found`);
}

function setPerClientBucket(doc, bucket) {
  const filtersPath = [...HCM_PATH, "http_filters"];
  const filterCount = itemCount(doc, filtersPath);
  for (let f = 0; f < filterCount; f++) {
    if (doc.getIn([...filtersPath, f, "name"]) !== RATE_LIMIT_FILTER) continue;
    const descriptorsPath = [...filtersPath, f, "typed_config", "descriptors"];
    const descriptorCount = itemCount(doc, descriptorsPath);
    for (let d = 0; d < descriptorCount; d++) {
      const keys = doc.getIn([...descriptorsPath, d, "entries"])?.toJSON?.() ?? [];
      if (keys.length !== 1 || keys[0]?.key !== CLIENT_DESCRIPTOR_KEY) continue;
      doc.setIn(
        [...descriptorsPath, d, "token_bucket"],
        doc.createNode({
          max_tokens: bucket.maxTokens,
          tokens_per_fill: bucket.tokensPerFill,
          fill_interval: bucket.fillInterval,
        }),
      );
      return;
    }
  }
  fail(`no ${RATE_LIMIT_FILTER} descriptor keyed on ${CLIENT_DESCRIPTOR_KEY} alone`);
}

/**
 * envoy/envoy.yaml rendered for 127.0.0.1 and the given ports, optionally with a different
 * per-client token bucket or a transport socket (TLS) on the keygate cluster.
 * @param {import("./render-envoy-config.d.mts").RenderEnvoyOptions} options
 * @returns {string} the configuration text
 * @throws Error when the shipped file no longer has the listener, clusters or rate limit
 *   descriptor this expects.
 */
export function renderEnvoyConfig(options) {
  const doc = parseDocument(readFileSync(options.configPath ?? ENVOY_CONFIG_PATH, "utf8"));
  if (doc.errors.length > 0) fail(doc.errors[0]?.message ?? "unparsable");

  setSocketAddress(doc, ["admin", "address"], "admin.address", options.adminPort);
  if (itemCount(doc, ["static_resources", "listeners"]) !== 1)
    fail("expected exactly one listener");
  setSocketAddress(
    doc,
    ["static_resources", "listeners", 0, "address"],
    "listener address",
    options.listenPort,
  );
  rewriteClusters(doc, {
    keygate: options.keygatePort,
    keygate_response_path: options.keygatePort,
    apollo: options.upstreamPort,
  });
  if (options.perClientRateLimit !== undefined) setPerClientBucket(doc, options.perClientRateLimit);
  if (options.keygateTransportSocket !== undefined) {
    // Both of keygate's clusters: the Checks' and the response path's.
    for (const cluster of ["keygate", "keygate_response_path"])
      setClusterField(doc, cluster, "transport_socket", options.keygateTransportSocket);
  }
  // lineWidth 0: never fold long strings such as the access log format operators.
  return doc.toString({ lineWidth: 0 });
}
