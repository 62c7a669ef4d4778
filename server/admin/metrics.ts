/**
 * Prometheus metrics (prom-client) on a registry of keygate's own. Label values for
 * denials come from the error catalogue, so dashboards and the README agree.
 */
import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from "prom-client";

export interface Metrics {
  readonly registry: Registry;
  readonly decisions: Counter<"result" | "type" | "mode" | "auth_mode">;
  readonly checkDuration: Histogram<"result">;
  readonly keystoreGeneration: Gauge;
  readonly keystoreClients: Gauge;
  readonly keystoreStale: Gauge;
  readonly keystoreReady: Gauge;
  readonly reloads: Counter<"result">;
  readonly lastReload: Gauge;
  /** Checks refused by brute-force throttling, without a lookup. */
  readonly throttledChecks: Counter;
  /** Names the function the tracked-sources gauge reads at each scrape. */
  watchThrottleSources(count: () => number): void;
}

/** Names as documented in the README's metrics table. */
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
  return {
    registry,
    decisions: new Counter({
      name: "keygate_check_decisions_total",
      help: "Check decisions by result (allow, deny, would_deny), denial type, policy mode and auth mode.",
      labelNames: ["result", "type", "mode", "auth_mode"],
      registers: [registry],
    }),
    checkDuration: new Histogram({
      name: "keygate_check_duration_seconds",
      help: "Time keygate spent deciding one Check, from decode to response.",
      labelNames: ["result"],
      buckets: [
        0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
      ],
      registers: [registry],
    }),
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
    watchThrottleSources(count) {
      throttleSources = count;
    },
  };
}
