/** UTC days and budget windows at the edges: midnight, month ends, leap days, year end. */
import test from "ava";
import { WindowClock } from "../../server/usage/budget-window.js";
import {
  type UsagePeriod,
  utcDay,
  utcMonthStart,
  windowResetAt,
  windowStartDay,
} from "../../server/usage/usage-day.js";

const at = (iso: string) => Date.parse(iso);

const WINDOWS: readonly {
  name: string;
  now: string;
  per: UsagePeriod;
  start: string;
  reset: string;
}[] = [
  {
    name: "day, at noon",
    now: "2026-12-03T12:00:00Z",
    per: "day",
    start: "2026-12-03",
    reset: "2026-12-04T00:00:00.000Z",
  },
  {
    name: "day, the last millisecond",
    now: "2026-12-03T23:59:59.999Z",
    per: "day",
    start: "2026-12-03",
    reset: "2026-12-04T00:00:00.000Z",
  },
  {
    name: "day, at midnight exactly",
    now: "2026-12-04T00:00:00Z",
    per: "day",
    start: "2026-12-04",
    reset: "2026-12-05T00:00:00.000Z",
  },
  {
    name: "day, an evening west of UTC is already tomorrow in UTC",
    now: "2026-12-03T23:30:00-02:00",
    per: "day",
    start: "2026-12-04",
    reset: "2026-12-05T00:00:00.000Z",
  },
  {
    name: "month, mid-month",
    now: "2026-12-15T08:00:00Z",
    per: "month",
    start: "2026-12-01",
    reset: "2027-01-01T00:00:00.000Z",
  },
  {
    name: "month, its last millisecond",
    now: "2026-11-30T23:59:59.999Z",
    per: "month",
    start: "2026-11-01",
    reset: "2026-12-01T00:00:00.000Z",
  },
  {
    name: "month, its first millisecond",
    now: "2026-12-01T00:00:00Z",
    per: "month",
    start: "2026-12-01",
    reset: "2027-01-01T00:00:00.000Z",
  },
  {
    name: "month, February of a leap year",
    now: "2028-02-29T12:00:00Z",
    per: "month",
    start: "2028-02-01",
    reset: "2028-03-01T00:00:00.000Z",
  },
  {
    name: "month, February of a common year",
    now: "2027-02-28T23:59:59Z",
    per: "month",
    start: "2027-02-01",
    reset: "2027-03-01T00:00:00.000Z",
  },
];

for (const window of WINDOWS) {
  test(`window: ${window.name}`, (t) => {
    const now = at(window.now);
    t.is(windowStartDay(window.per, now), window.start);
    t.is(new Date(windowResetAt(window.per, now)).toISOString(), window.reset);
  });
}

test("utcDay and utcMonthStart name UTC calendar days", (t) => {
  t.is(utcDay(0), "1970-01-01");
  t.is(utcDay(at("2026-12-31T23:59:59.999Z")), "2026-12-31");
  t.is(utcMonthStart(at("2026-12-31T23:59:59.999Z")), "2026-12-01");
});

test("the day window's start answers as utcDay across midnights, in any order", (t) => {
  const clock = new WindowClock();
  const times = [
    "2026-12-03T23:59:59.999Z",
    "2026-12-04T00:00:00Z",
    "2026-12-03T00:00:00Z",
    "2026-12-02T23:59:59.999Z",
    "2027-01-01T00:00:00Z",
    "2026-12-03T12:00:00Z",
  ].map(at);
  for (const time of times) t.is(clock.windowOf("day", time).startDay, utcDay(time));
});
