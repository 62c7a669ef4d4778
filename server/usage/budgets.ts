/**
 * Budgets as main.ts composes them: the counters (a UsageSink, and `spent` for Check),
 * the optional Redis store that shares them between replicas, what /readyz and /keystore
 * show, and the gauges on /metrics. Degraded (Redis configured but not answering) never
 * makes keygate unready: serving on local counts is the designed fallback, and taking
 * every replica out of rotation would turn a counter outage into a full outage.
 */
import { Gauge, type Registry } from "prom-client";
import type { Budget } from "../keystore/format/model.js";
import type { Logger } from "../logger.js";
import { BudgetCounters, type LedgerTotals } from "./budget-counters.js";
import type { RedisBudgetStatus, RedisBudgetStore } from "./redis-budget-store.js";

/** Clients listed on /keystore at most (the most spent relative to their budget first); counts cover all. */
export const MAX_LISTED_BUDGETS = 100;

export interface BudgetClientStatus {
  readonly id: string;
  readonly budget: Budget;
  readonly spent: number;
  readonly exhausted: boolean;
  readonly resets_at: string;
}

/** The `budgets` section of /keystore; `degraded` and `store` also go to /readyz. */
export interface BudgetStatus {
  readonly store: "local" | "redis";
  /** Redis is configured and not answering: each replica enforces its own counts. */
  readonly degraded: boolean;
  readonly redis: RedisBudgetStatus | null;
  /** Budgeted clients Check has seen since this replica started. */
  readonly tracked: number;
  readonly exhausted: number;
  readonly clients: readonly BudgetClientStatus[];
}

export interface Budgets {
  readonly counters: BudgetCounters;
  status(now?: number): BudgetStatus;
  /** Pushes what is still queued (when Redis answers) and disconnects. */
  close(): Promise<void>;
}

export interface BudgetOptions {
  /** KEYGATE_USAGE_REDIS_URL, or null for local counts only. */
  readonly redisUrl: string | null;
  readonly logger: Logger;
  readonly registry: Registry;
  /** The usage ledger, to start the current windows from; absent when there is none. */
  readonly ledger?: LedgerTotals;
}

/**
 * Creates the counters, recovers the current windows from the ledger and starts the
 * Redis store when configured (connecting in the background). The Redis client is loaded
 * only then: ioredis would otherwise hold about 8 MiB of heap in every replica that
 * counts locally.
 */
export async function startBudgets(options: BudgetOptions): Promise<Budgets> {
  const counters = new BudgetCounters();
  if (options.ledger !== undefined) recoverFromLedger(counters, options.ledger, options.logger);
  let redis: RedisBudgetStore | null = null;
  if (options.redisUrl !== null) {
    const { RedisBudgetStore } = await import("./redis-budget-store.js");
    redis = new RedisBudgetStore({
      url: options.redisUrl,
      logger: options.logger,
      ownTotals: (now) => counters.ownTotals(now),
    });
    counters.share(redis);
    redis.start();
  }
  const status = (now = Date.now()) => budgetStatus(counters, redis, now);
  registerBudgetMetrics(options.registry, status);
  return { counters, status, close: async () => redis?.close() };
}

function recoverFromLedger(counters: BudgetCounters, ledger: LedgerTotals, logger: Logger): void {
  try {
    counters.recover(ledger, Date.now());
  } catch (error) {
    // Budgets start from zero rather than keygate not starting: the ledger is a record, not a gate.
    logger.error({ err: error }, "budget counters: cannot read the usage ledger; starting from 0");
  }
}

function budgetStatus(
  counters: BudgetCounters,
  redis: RedisBudgetStore | null,
  now: number,
): BudgetStatus {
  const uses = counters.budgetUses(now);
  const clients = uses
    .map((use) => ({
      id: use.clientId,
      budget: use.budget,
      spent: use.spent,
      exhausted: use.spent >= use.budget.tokens,
      resets_at: new Date(use.resetsAt).toISOString(),
    }))
    .sort(
      (a, b) => b.spent / b.budget.tokens - a.spent / a.budget.tokens || (a.id < b.id ? -1 : 1),
    );
  const redisStatus = redis?.status() ?? null;
  return {
    store: redis === null ? "local" : "redis",
    degraded: redisStatus !== null && redisStatus.state !== "up",
    redis: redisStatus,
    tracked: clients.length,
    exhausted: clients.filter((client) => client.exhausted).length,
    clients: clients.slice(0, MAX_LISTED_BUDGETS),
  };
}

/** Gauges read at each scrape, so nothing on the request path touches them. */
function registerBudgetMetrics(registry: Registry, status: () => BudgetStatus): void {
  const gauge = (name: string, help: string, read: (s: BudgetStatus) => number) =>
    new Gauge({
      name,
      help,
      registers: [registry],
      collect() {
        this.set(read(status()));
      },
    });
  gauge(
    "keygate_usage_redis_up",
    "1 when the Redis that shares budget counters answered the last sync; 0 when it did not or none is configured.",
    (s) => (s.redis?.state === "up" ? 1 : 0),
  );
  gauge(
    "keygate_budget_degraded",
    "1 when Redis is configured but not answering: budgets are enforced on this replica's own counts.",
    (s) => (s.degraded ? 1 : 0),
  );
  gauge(
    "keygate_budget_pending_increments",
    "Budget increments (client and window) queued for Redis, waiting for it to answer.",
    (s) => s.redis?.pendingIncrements ?? 0,
  );
  gauge(
    "keygate_budget_dropped_increments",
    "Budget increments dropped because the queue for Redis was full (since start-up).",
    (s) => s.redis?.droppedIncrements ?? 0,
  );
  gauge(
    "keygate_budget_exhausted_clients",
    "Budgeted clients seen by Check whose budget for the current window is spent.",
    (s) => s.exhausted,
  );
}
