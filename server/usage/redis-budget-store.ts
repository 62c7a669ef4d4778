/**
 * Budget counters shared between replicas through Redis (KEYGATE_USAGE_REDIS_URL). Off
 * the Check path entirely: record() queues increments and spent() reads a cache, both in
 * memory; a sync about once a second pushes the queue (INCRBY per client and window, with
 * PEXPIREAT at the window's end plus slack) and fetches the totals of the windows Check
 * has asked about (MGET), so every replica sees the shared total within about a second.
 *
 * Redis failing never stops keygate: the queue is kept (bounded) and pushed when Redis
 * answers again, Check keeps comparing with local counts, and the store reports itself
 * degraded (status(), /readyz details, metrics). Redis restarted without its data is
 * detected by an epoch key that every replica knows: when it is gone or new, each
 * replica re-sends its own totals for the current windows instead of its queue. A reply
 * lost with the connection may leave an increment applied and still queued: it is sent
 * again, so an outage can over-count, never under-count.
 *
 * The URL may hold a password: only `target` (scheme, host, port, database) is ever shown.
 */
import { randomUUID } from "node:crypto";
import { Redis } from "ioredis";
import type { Logger } from "../logger.js";
import { scrubbed } from "../shown-text.js";
import type { SharedBudgetStore } from "./budget-counters.js";
import type { BudgetWindow } from "./budget-window.js";

export const KEY_PREFIX = "keygate:budget:";
/** Present while Redis holds the counters; its value changes only when Redis lost them. */
export const EPOCH_KEY = `${KEY_PREFIX}epoch`;
/** Keys live this long past their window, for replicas whose clocks lag. */
const EXPIRY_SLACK_MS = 3_600_000;
const SYNC_INTERVAL_MS = 1000;
/** Queued (client, window) increments kept while Redis is away; beyond it they are dropped and counted. */
const MAX_PENDING = 100_000;
/** Windows whose totals are fetched each sync; a bound on a keystore of many active budgeted clients. */
const MAX_WATCHED = 100_000;
/**
 * Increments per pipeline. A backlog queued during an outage goes out over several
 * pushes, each well inside the command timeout: a pipeline that times out after Redis
 * applied it is sent again, which over-counts.
 */
const MAX_INCREMENTS_PER_PUSH = 5000;
const MGET_CHUNK = 1000;
const REDIS_TIMEOUT_MS = 2000;

export type RedisState = "connecting" | "up" | "degraded";

export interface RedisBudgetStatus {
  readonly target: string;
  readonly state: RedisState;
  /** Why the store is degraded (the last Redis error, scrubbed), or null. */
  readonly reason: string | null;
  /** ISO time of the last successful sync, or null. */
  readonly lastSyncAt: string | null;
  readonly pendingIncrements: number;
  readonly droppedIncrements: number;
  readonly watchedWindows: number;
}

export interface RedisBudgetStoreOptions {
  readonly url: string;
  readonly logger: Logger;
  /** This replica's own tokens per client for the current windows, re-sent when Redis lost its counts. */
  readonly ownTotals: (
    now: number,
  ) => Iterable<{ clientId: string; window: BudgetWindow; tokens: number }>;
  readonly syncIntervalMs?: number;
  readonly maxPending?: number;
  readonly now?: () => number;
}

interface Pending {
  amount: number;
  readonly expiresAt: number;
}

/** scheme://host:port/db of a Redis URL: never its user name or password. */
export function redisTarget(url: string): string {
  const parsed = new URL(url);
  return `${parsed.protocol}//${parsed.hostname}:${parsed.port || "6379"}${parsed.pathname}`;
}

function keyOf(clientId: string, window: BudgetWindow): string {
  return `${KEY_PREFIX}${window.per}:${window.startDay}:${clientId}`;
}

export class RedisBudgetStore implements SharedBudgetStore {
  readonly #redis: Redis;
  readonly #options: RedisBudgetStoreOptions;
  readonly #now: () => number;
  readonly #target: string;
  readonly #password: string;
  readonly #pending = new Map<string, Pending>();
  /** Shared totals as Redis last answered, by key. */
  readonly #shared = new Map<string, number>();
  /** Keys Check asked about, with when they expire. */
  readonly #watched = new Map<string, number>();
  #epoch: string | null | undefined;
  #state: RedisState = "connecting";
  #reason: string | null = null;
  #lastSyncAt: number | null = null;
  #dropped = 0;
  #syncing: Promise<void> | null = null;
  #soon: NodeJS.Timeout | null = null;
  #timer: NodeJS.Timeout | null = null;
  #closed = false;

  constructor(options: RedisBudgetStoreOptions) {
    this.#options = options;
    this.#now = options.now ?? Date.now;
    this.#target = redisTarget(options.url);
    this.#password = decodeURIComponent(new URL(options.url).password);
    this.#redis = new Redis(options.url, {
      lazyConnect: true,
      // A command while Redis is away fails at once: nothing waits behind an outage.
      enableOfflineQueue: false,
      maxRetriesPerRequest: 0,
      connectTimeout: REDIS_TIMEOUT_MS,
      commandTimeout: REDIS_TIMEOUT_MS,
      // Never give up reconnecting; back off to one attempt every 2 s.
      retryStrategy: (times) => Math.min(times * 250, 2000),
    });
    // Without a listener ioredis prints every connection error itself.
    this.#redis.on("error", (error: Error) => this.#degrade(error));
    this.#redis.on("ready", () => this.#syncSoon());
  }

  /** Connects and starts syncing; returns at once (a Redis that is away makes the store degraded, not start-up fail). */
  start(): void {
    this.#redis.connect().catch((error: Error) => this.#degrade(error));
    this.#timer = setInterval(
      () => void this.sync(),
      this.#options.syncIntervalMs ?? SYNC_INTERVAL_MS,
    );
    this.#timer.unref();
  }

  add(clientId: string, window: BudgetWindow, tokens: number): void {
    const key = keyOf(clientId, window);
    const entry = this.#pending.get(key);
    if (entry !== undefined) entry.amount += tokens;
    else if (this.#pending.size < (this.#options.maxPending ?? MAX_PENDING))
      this.#pending.set(key, { amount: tokens, expiresAt: window.resetsAt + EXPIRY_SLACK_MS });
    else this.#dropped += 1;
  }

  spent(clientId: string, window: BudgetWindow): number {
    const key = keyOf(clientId, window);
    if (!this.#watched.has(key) && this.#watched.size < MAX_WATCHED) {
      this.#watched.set(key, window.resetsAt + EXPIRY_SLACK_MS);
      // A window Check has not asked about before: fetch it now rather than at the next tick.
      this.#syncSoon();
    }
    return (this.#shared.get(key) ?? 0) + (this.#pending.get(key)?.amount ?? 0);
  }

  status(): RedisBudgetStatus {
    return {
      target: this.#target,
      state: this.#state,
      reason: this.#reason,
      lastSyncAt: this.#lastSyncAt === null ? null : new Date(this.#lastSyncAt).toISOString(),
      pendingIncrements: this.#pending.size,
      droppedIncrements: this.#dropped,
      watchedWindows: this.#watched.size,
    };
  }

  /** One push-and-fetch round; never throws, never runs twice at once. Resolves when it is done. */
  sync(): Promise<void> {
    if (this.#closed) return Promise.resolve();
    this.#syncing ??= this.#syncOnce().finally(() => {
      this.#syncing = null;
    });
    return this.#syncing;
  }

  /** Stops syncing after one last push (at most REDIS_TIMEOUT_MS), then disconnects. */
  async close(): Promise<void> {
    if (this.#timer !== null) clearInterval(this.#timer);
    if (this.#soon !== null) clearTimeout(this.#soon);
    // A sync in flight may have started before the last responses' usage: one more after it.
    await this.#syncing;
    if (this.#state === "up") await this.sync();
    this.#closed = true;
    this.#redis.disconnect();
  }

  async #syncOnce(): Promise<void> {
    try {
      const now = this.#now();
      this.#prune(now);
      await this.#checkEpoch(now);
      await this.#pushAndFetch();
      this.#lastSyncAt = this.#now();
      if (this.#state !== "up")
        this.#options.logger.info(
          { redis: this.#target, pending_increments: this.#pending.size },
          "budget counters: Redis is answering; shared totals in use",
        );
      this.#state = "up";
      this.#reason = null;
    } catch (error) {
      this.#degrade(error as Error);
    }
  }

  /** Re-sends this replica's totals when Redis lost its counters (no epoch, or a new one). */
  async #checkEpoch(now: number): Promise<void> {
    let epoch = await this.#redis.get(EPOCH_KEY);
    let lost = false;
    if (epoch === null) {
      await this.#redis.set(EPOCH_KEY, randomUUID(), "NX");
      epoch = await this.#redis.get(EPOCH_KEY);
      lost = true;
    } else if (this.#epoch !== undefined && epoch !== this.#epoch) lost = true;
    if (lost) {
      this.#pending.clear();
      this.#shared.clear();
      for (const { clientId, window, tokens } of this.#options.ownTotals(now))
        this.add(clientId, window, tokens);
      if (this.#epoch !== undefined)
        this.#options.logger.warn(
          { redis: this.#target, resent_windows: this.#pending.size },
          "budget counters: Redis lost its counters (restarted without data?); re-sending this replica's totals",
        );
    }
    this.#epoch = epoch;
  }

  /** INCRBY + PEXPIREAT for up to MAX_INCREMENTS_PER_PUSH queued increments, then MGET of every watched window, in one pipeline. */
  async #pushAndFetch(): Promise<void> {
    const batch: (readonly [key: string, amount: number, expiresAt: number])[] = [];
    for (const [key, entry] of this.#pending) {
      if (batch.length === MAX_INCREMENTS_PER_PUSH) break;
      batch.push([key, entry.amount, entry.expiresAt]);
    }
    const watched = [...this.#watched.keys()];
    const pipeline = this.#redis.pipeline();
    for (const [key, amount, expiresAt] of batch)
      pipeline.incrby(key, amount).pexpireat(key, expiresAt);
    for (let i = 0; i < watched.length; i += MGET_CHUNK)
      pipeline.mget(watched.slice(i, i + MGET_CHUNK));
    const results = (await pipeline.exec()) ?? [];
    let failure: Error | null = null;
    batch.forEach(([key, amount], index) => {
      const [error, total] = results[index * 2] ?? [new Error("no reply")];
      if (error) failure = error;
      else this.#applied(key, amount, Number(total));
    });
    for (let chunk = 0; chunk * MGET_CHUNK < watched.length; chunk += 1) {
      const [error, values] = results[batch.length * 2 + chunk] ?? [new Error("no reply")];
      if (error) failure = error;
      else
        (values as (string | null)[]).forEach((value, index) => {
          this.#shared.set(watched[chunk * MGET_CHUNK + index] as string, Number(value ?? 0));
        });
    }
    if (failure !== null) throw failure;
  }

  /**
   * An increment Redis confirmed: no longer queued, and its reply is the shared total,
   * kept for windows Check reads (the others would only pile up: #prune follows #watched).
   */
  #applied(key: string, amount: number, total: number): void {
    const entry = this.#pending.get(key);
    if (entry !== undefined) {
      entry.amount -= amount;
      if (entry.amount <= 0) this.#pending.delete(key);
    }
    if (this.#watched.has(key)) this.#shared.set(key, total);
  }

  /** Windows past their expiry: Redis has dropped them, and so does the cache. */
  #prune(now: number): void {
    for (const [key, expiresAt] of this.#watched)
      if (expiresAt <= now) {
        this.#watched.delete(key);
        this.#shared.delete(key);
      }
    for (const [key, entry] of this.#pending) if (entry.expiresAt <= now) this.#pending.delete(key);
  }

  #syncSoon(): void {
    if (this.#soon !== null || this.#closed) return;
    this.#soon = setTimeout(() => {
      this.#soon = null;
      void this.sync();
    }, 0);
    this.#soon.unref();
  }

  #degrade(error: Error): void {
    // A command refused while disconnected says only that: keep the connection's own error.
    const offline = this.#redis.status !== "ready";
    if (offline && this.#reason !== null && this.#state === "degraded") return;
    const reason = this.#scrub(error.message);
    if (this.#state !== "degraded")
      this.#options.logger.warn(
        { redis: this.#target, reason, pending_increments: this.#pending.size },
        "budget counters: Redis unreachable; counting locally until it answers",
      );
    this.#state = "degraded";
    this.#reason = reason;
  }

  /** An error message without the URL's password, should a driver ever echo it. */
  #scrub(message: string): string {
    const text = this.#password === "" ? message : message.split(this.#password).join("***");
    return scrubbed(text);
  }
}
