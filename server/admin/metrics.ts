/**
 * Prometheus metrics (prom-client) on a registry of keygate's own. Label values for
 * denials come from the error catalogue, so dashboards and the README agree.
 */
import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from "prom-client";

/** The labels of one Check decision. */
export interface DecisionLabels {
  readonly result: "allow" | "deny" | "would_deny";
  readonly type: string;
  readonly mode: string;
  readonly auth_mode: string;
}

export interface Metrics {
  readonly registry: Registry;
  /** Counts one decision and observes its duration. */
  recordCheck(labels: DecisionLabels, seconds: number): void;
  readonly keystoreGeneration: Gauge;
  readonly keystoreClients: Gauge;
  readonly keystoreStale: Gauge;
  readonly keystoreReady: Gauge;
  readonly reloads: Counter<"result">;
  readonly lastReload: Gauge;
  /** Checks refused by brute-force throttling, without a lookup. */
  readonly throttledChecks: Counter;
  /** Held keys' provider failures answered with a typed body (the response path), by type. */
  readonly providerErrors: Counter<"type">;
  /** Authenticated successes whose usage went uncounted (the response path), by reason. */
  readonly usageMissing: Counter<"reason">;
  /** Names the function the tracked-sources gauge reads at each scrape. */
  watchThrottleSources(count: () => number): void;
}

/** Names as documented in the README's metrics table. */
// biome-ignore lint/complexity/noExcessiveLinesPerFunction: a list of metric definitions.
export function createMetrics(): Metrics {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry, prefix: "keygate_" });
  let throttleSources = (): number => 0;
  new Gauge({
    name: "keygate_throttle_tracked_sources",
    help: "Request sources with failed credentials in an open throttling window (bounded).",
    registers: [registry],
    collect() {
      this.set(throttleSources());
    },
  });
  const decisions = new Counter({
    name: "keygate_check_decisions_total",
    help: "Check decisions by result (allow, deny, would_deny), denial type, policy mode and auth mode.",
    labelNames: ["result", "type", "mode", "auth_mode"] as const,
    registers: [registry],
  });
  const checkDuration = new Histogram({
    name: "keygate_check_duration_seconds",
    help: "Time keygate spent deciding one Check, from decode to response.",
    labelNames: ["result"] as const,
    buckets: [0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25],
    registers: [registry],
  });
  return {
    registry,
    recordCheck(labels, seconds) {
      // Straight to the metrics: prom-client's labels() children hash and check the labels
      // on every call all the same, so keeping them bought nothing (2.1 against 1.7 µs).
      decisions.inc(labels);
      checkDuration.observe({ result: labels.result }, seconds);
    },
    keystoreGeneration: new Gauge({
      name: "keygate_keystore_generation",
      help: "Id of the keystore generation being served (0 when none).",
      registers: [registry],
    }),
    keystoreClients: new Gauge({
      name: "keygate_keystore_clients",
      help: "Clients in the keystore generation being served.",
      registers: [registry],
    }),
    keystoreStale: new Gauge({
      name: "keygate_keystore_stale",
      help: "1 when the generation served is not what keystore.yaml holds now (missing or invalid file).",
      registers: [registry],
    }),
    keystoreReady: new Gauge({
      name: "keygate_keystore_ready",
      help: "1 when a keystore generation is loaded and Checks can be decided.",
      registers: [registry],
    }),
    reloads: new Counter({
      name: "keygate_keystore_reloads_total",
      help: "Keystore reload attempts by result (applied, unchanged, failed).",
      labelNames: ["result"],
      registers: [registry],
    }),
    lastReload: new Gauge({
      name: "keygate_keystore_last_reload_timestamp_seconds",
      help: "Unix time of the last keystore reload attempt.",
      registers: [registry],
    }),
    throttledChecks: new Counter({
      name: "keygate_throttled_checks_total",
      help: "Checks answered 429 RATE_LIMITED without a lookup: too many failed credentials from their source.",
      registers: [registry],
    }),
    providerErrors: new Counter({
      name: "keygate_provider_errors_total",
      help: "Provider failures of held keys that keygate answered with a typed body, by type (AUTH_ERROR, RATE_LIMIT, BILLING).",
      labelNames: ["type"] as const,
      registers: [registry],
    }),
    usageMissing: new Counter({
      name: "keygate_usage_missing_total",
      help: "Successful responses to authenticated clients whose token usage was not counted: encoded (a compressed body) or not_found (read, no usage in it).",
      labelNames: ["reason"] as const,
      registers: [registry],
    }),
    watchThrottleSources(count) {
      throttleSources = count;
    },
  };
}
