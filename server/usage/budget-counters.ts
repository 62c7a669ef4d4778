/**
 * Per-client token counters for budgets: a UsageSink that adds each response's tokens to
 * the client's current UTC day and UTC month, and the synchronous `spent` that Check
 * compares with the client's budget. Everything Check reads is in this process's memory:
 * no I/O, O(1). Accounting is post-paid: usage arrives after the response, so the
 * request that crosses a budget completes and the next is refused.
 *
 * Both windows are counted for every client, budgeted or not, so that a budget added or
 * changed in the middle of a window starts from what the window has already spent.
 * With a shared store (Redis, redis-budget-store.ts) each replica also sees the others'
 * usage: spent is the larger of this replica's own count and the shared total.
 */
import type { Budget } from "../keystore/format/model.js";
import { type BudgetWindow, WindowClock } from "./budget-window.js";
import { type TokenUsage, totalTokens, type UsageSink } from "./token-usage.js";
import type { UsageDay, UsagePeriod } from "./usage-day.js";

/** The ledger's read that recovers the current windows at start-up (usage-table.ts). */
export interface LedgerTotals {
  /** Every client's tokens from the start of `sinceDay` (UTC) on. */
  tokensSinceByClient(sinceDay: UsageDay): ReadonlyMap<string, number>;
}

/** What a store shared between replicas adds to local counting (redis-budget-store.ts). */
export interface SharedBudgetStore {
  /** Queues `tokens` for the client's window; sent off the request path. Never throws. */
  add(clientId: string, window: BudgetWindow, tokens: number): void;
  /** The shared total as last fetched plus what is still queued; 0 when unknown. Never does I/O. */
  spent(clientId: string, window: BudgetWindow): number;
}

/** One client's own counts, this window. */
interface LocalCounts {
  daySpent: number;
  dayStart: UsageDay;
  monthSpent: number;
  monthStart: UsageDay;
  /** The budget Check last compared against, for status; undefined if Check never asked. */
  budget: Budget | undefined;
}

/** A budgeted client as status shows it. */
export interface BudgetUse {
  readonly clientId: string;
  readonly budget: Budget;
  readonly spent: number;
  /** Epoch ms when the window resets. */
  readonly resetsAt: number;
}

const PERIODS: readonly UsagePeriod[] = ["day", "month"];

export class BudgetCounters implements UsageSink {
  readonly #clock = new WindowClock();
  readonly #local = new Map<string, LocalCounts>();
  #shared: SharedBudgetStore | null = null;

  /** Shares counts through `store` from now on (set once, before traffic). */
  share(store: SharedBudgetStore): void {
    this.#shared = store;
  }

  /**
   * Starts the current windows from what the ledger holds for them (this replica's own
   * usage before a restart), so a restart does not hand every client a fresh budget.
   * @throws Error when the ledger cannot be read (start-up reports it).
   */
  recover(ledger: LedgerTotals, now: number): void {
    const day = this.#clock.windowOf("day", now);
    const month = this.#clock.windowOf("month", now);
    const today = ledger.tokensSinceByClient(day.startDay);
    for (const [clientId, tokens] of ledger.tokensSinceByClient(month.startDay)) {
      const counts = this.#countsOf(clientId, now);
      counts.monthSpent = Math.max(counts.monthSpent, tokens);
      counts.daySpent = Math.max(counts.daySpent, today.get(clientId) ?? 0);
    }
  }

  /** Adds a response's tokens to the client's day and month. Never throws, never does I/O. */
  record(clientId: string, usage: TokenUsage, now: number): void {
    const tokens = totalTokens(usage);
    if (!Number.isFinite(tokens) || tokens <= 0) return;
    const counts = this.#countsOf(clientId, now);
    counts.daySpent += tokens;
    counts.monthSpent += tokens;
    if (this.#shared === null) return;
    for (const per of PERIODS) this.#shared.add(clientId, this.#clock.windowOf(per, now), tokens);
  }

  /**
   * What the client has spent in the window of `budget.per` holding `now`: the Check path's
   * read, from memory only. Remembers the budget for status.
   */
  spent(clientId: string, budget: Budget, now: number): number {
    const window = this.#clock.windowOf(budget.per, now);
    const counts = this.#countsOf(clientId, now);
    counts.budget = budget;
    const own = budget.per === "day" ? counts.daySpent : counts.monthSpent;
    return Math.max(own, this.#shared?.spent(clientId, window) ?? 0);
  }

  /** This replica's own tokens per client for the current windows (what a wiped shared store is re-sent). */
  *ownTotals(now: number): Generator<{ clientId: string; window: BudgetWindow; tokens: number }> {
    for (const [clientId, counts] of this.#local) {
      this.#roll(counts, now);
      const day = this.#clock.windowOf("day", now);
      const month = this.#clock.windowOf("month", now);
      if (counts.daySpent > 0) yield { clientId, window: day, tokens: counts.daySpent };
      if (counts.monthSpent > 0) yield { clientId, window: month, tokens: counts.monthSpent };
    }
  }

  /** The clients Check has compared with a budget since start-up, with what they spent. */
  budgetUses(now: number): BudgetUse[] {
    const uses: BudgetUse[] = [];
    for (const [clientId, counts] of this.#local) {
      if (counts.budget === undefined) continue;
      const { budget } = counts;
      const resetsAt = this.#clock.windowOf(budget.per, now).resetsAt;
      uses.push({ clientId, budget, spent: this.spent(clientId, budget, now), resetsAt });
    }
    return uses;
  }

  /** The client's counts, rolled over to the windows that hold `now`. */
  #countsOf(clientId: string, now: number): LocalCounts {
    let counts = this.#local.get(clientId);
    if (counts === undefined) {
      counts = { daySpent: 0, dayStart: "", monthSpent: 0, monthStart: "", budget: undefined };
      this.#local.set(clientId, counts);
    }
    this.#roll(counts, now);
    return counts;
  }

  /** A window that is over starts again from zero. */
  #roll(counts: LocalCounts, now: number): void {
    const day = this.#clock.windowOf("day", now).startDay;
    if (counts.dayStart !== day) {
      counts.dayStart = day;
      counts.daySpent = 0;
    }
    const month = this.#clock.windowOf("month", now).startDay;
    if (counts.monthStart !== month) {
      counts.monthStart = month;
      counts.monthSpent = 0;
    }
  }
}
