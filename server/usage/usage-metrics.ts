/**
 * Prometheus counters of token usage by client and model, with a bounded number of
 * series. Client ids come from the keystore (thousands are possible) and model names
 * from provider responses, so each label keeps at most a fixed number of distinct values,
 * the first seen since start-up; later ones are counted under OVERFLOW_LABEL, and so is
 * any (client, model) pair beyond MAX_LABEL_PAIRS. The bound on series is therefore
 * (MAX_LABEL_PAIRS + 1) × 5 (four token kinds and the response count), about 10 000.
 */
import { Counter, type Registry } from "prom-client";
import { normalizeModel } from "./model-name.js";
import type { TokenUsage, UsageSink } from "./token-usage.js";

/** Distinct client label values; the rest are OVERFLOW_LABEL. */
export const MAX_CLIENT_LABELS = 500;
/** Distinct model label values (after normalizeModel); the rest are OVERFLOW_LABEL. */
export const MAX_MODEL_LABELS = 50;
/** Distinct (client, model) label pairs; the rest are (OVERFLOW_LABEL, OVERFLOW_LABEL). */
export const MAX_LABEL_PAIRS = 2000;
/** Neither a client id (keystore ids start with [a-z0-9]) nor a normalised model name. */
export const OVERFLOW_LABEL = "(other)";

const OVERFLOW_PAIR = `${OVERFLOW_LABEL}\0${OVERFLOW_LABEL}`;
const KINDS = ["input", "output", "cache_read", "cache_write"] as const;

export interface UsageMetricsLimits {
  readonly clients: number;
  readonly models: number;
  readonly pairs: number;
}

const DEFAULT_LIMITS: UsageMetricsLimits = {
  clients: MAX_CLIENT_LABELS,
  models: MAX_MODEL_LABELS,
  pairs: MAX_LABEL_PAIRS,
};

/** The counters one (client, model) label pair increments, bound once. */
interface PairCounters {
  readonly responses: Counter.Internal;
  readonly tokens: readonly Counter.Internal[];
}

/** Keeps the first `max` distinct values it is shown; later ones read as OVERFLOW_LABEL. */
class BoundedLabel {
  private readonly seen = new Set<string>();
  constructor(private readonly max: number) {}

  of(value: string): string {
    if (this.seen.has(value)) return value;
    if (this.seen.size >= this.max) return OVERFLOW_LABEL;
    this.seen.add(value);
    return value;
  }
}

/** A UsageSink that counts into `registry`; no I/O, a map lookup per response once warm. */
export function createUsageMetrics(
  registry: Registry,
  limits: UsageMetricsLimits = DEFAULT_LIMITS,
): UsageSink & { readonly dropped: Counter } {
  const tokens = new Counter({
    name: "keygate_usage_tokens_total",
    help: "Tokens providers reported by client, model and kind (input, output, cache_read, cache_write); label values bounded, the rest under (other).",
    labelNames: ["client", "model", "kind"] as const,
    registers: [registry],
  });
  const responses = new Counter({
    name: "keygate_usage_responses_total",
    help: "Provider responses that reported token usage, by client and model; label values bounded, the rest under (other).",
    labelNames: ["client", "model"] as const,
    registers: [registry],
  });
  const dropped = new Counter({
    name: "keygate_usage_dropped_total",
    help: "Responses whose token usage was not recorded in SQLite: the database stayed unwritable and the pending batch was full.",
    registers: [registry],
  });
  const clients = new BoundedLabel(limits.clients);
  const models = new BoundedLabel(limits.models);
  const pairs = new Map<string, PairCounters>();
  const countersOf = (client: string, model: string): PairCounters => {
    const key = `${client}\0${model}`;
    let counters = pairs.get(key);
    if (counters === undefined) {
      // The overflow pair itself is always made: it is the +1 in the documented bound.
      if (pairs.size >= limits.pairs && key !== OVERFLOW_PAIR) {
        return countersOf(OVERFLOW_LABEL, OVERFLOW_LABEL);
      }
      counters = {
        responses: responses.labels({ client, model }),
        tokens: KINDS.map((kind) => tokens.labels({ client, model, kind })),
      };
      pairs.set(key, counters);
    }
    return counters;
  };
  return {
    dropped,
    record(clientId: string, usage: TokenUsage): void {
      const counters = countersOf(clients.of(clientId), models.of(normalizeModel(usage.model)));
      counters.responses.inc();
      const [input, output, cacheRead, cacheWrite] = counters.tokens;
      input?.inc(nonNegative(usage.inputTokens));
      output?.inc(nonNegative(usage.outputTokens));
      cacheRead?.inc(nonNegative(usage.cacheReadTokens));
      cacheWrite?.inc(nonNegative(usage.cacheWriteTokens));
    },
  };
}

/** prom-client throws on a negative increment; a provider's odd count must not break the response path. */
function nonNegative(value: number): number {
  return Number.isFinite(value) && value > 0 ? value : 0;
}
