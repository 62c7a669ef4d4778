/**
 * UTC days and the day and month windows built from them. Token usage is stored per
 * client, model and UTC day, so a day or month budget window is a whole number of stored
 * days and its total is exact. Pure: `now` is passed in.
 */

/** A UTC calendar day as stored: `YYYY-MM-DD`, which sorts as it counts. */
export type UsageDay = string;

/** A budget window (keystore.yaml `budget.per`). */
export type UsagePeriod = "day" | "month";

const DAY_MS = 86_400_000;

/** The UTC day `epochMs` falls in. */
export function utcDay(epochMs: number): UsageDay {
  return new Date(epochMs).toISOString().slice(0, 10);
}

/** The first day of the UTC month `epochMs` falls in. */
export function utcMonthStart(epochMs: number): UsageDay {
  return `${utcDay(epochMs).slice(0, 7)}-01`;
}

/** The first stored day of the window that holds `now`: today, or the 1st of this month. */
export function windowStartDay(per: UsagePeriod, now: number): UsageDay {
  return per === "day" ? utcDay(now) : utcMonthStart(now);
}

/** Epoch ms at which the window holding `now` ends and the next one starts (UTC midnight). */
export function windowResetAt(per: UsagePeriod, now: number): number {
  if (per === "day") return Math.floor(now / DAY_MS) * DAY_MS + DAY_MS;
  const date = new Date(now);
  return Date.UTC(date.getUTCFullYear(), date.getUTCMonth() + 1, 1);
}
