/**
 * The budget window a moment falls in (UTC day or UTC month, usage-day.ts's calendar),
 * cached so that Check, which asks on every request of a budgeted client, builds a date
 * string once a day rather than once a request. Pure apart from the cache: `now` is passed in.
 */
import { type UsageDay, type UsagePeriod, windowResetAt, windowStartDay } from "./usage-day.js";

export interface BudgetWindow {
  readonly per: UsagePeriod;
  /** The window's first UTC day (`YYYY-MM-DD`): its name in the ledger and in Redis keys. */
  readonly startDay: UsageDay;
  /** Epoch ms of the window's first instant. */
  readonly startsAt: number;
  /** Epoch ms at which the next window starts and the budget resets. */
  readonly resetsAt: number;
}

/** The window of `per` that holds `now`. */
export function budgetWindow(per: UsagePeriod, now: number): BudgetWindow {
  const startDay = windowStartDay(per, now);
  return Object.freeze({
    per,
    startDay,
    startsAt: Date.parse(`${startDay}T00:00:00Z`),
    resetsAt: windowResetAt(per, now),
  });
}

/** Whole seconds until `resetsAt`, at least 1: what `retry-after` says to a refused client. */
export function secondsUntil(resetsAt: number, now: number): number {
  return Math.max(1, Math.ceil((resetsAt - now) / 1000));
}

/** The current day and month windows, recomputed only when `now` leaves them (either way: clocks step back). */
export class WindowClock {
  #day: BudgetWindow = budgetWindow("day", 0);
  #month: BudgetWindow = budgetWindow("month", 0);

  windowOf(per: UsagePeriod, now: number): BudgetWindow {
    const cached = per === "day" ? this.#day : this.#month;
    if (now >= cached.startsAt && now < cached.resetsAt) return cached;
    const fresh = budgetWindow(per, now);
    if (per === "day") this.#day = fresh;
    else this.#month = fresh;
    return fresh;
  }
}
