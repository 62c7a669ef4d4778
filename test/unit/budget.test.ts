/**
 * Token budgets as pure logic: UTC window math at day, month and leap-year boundaries,
 * the counters (post-paid, roll-over, recovery from the ledger), and the decision table's
 * QUOTA_EXCEEDED rows in every mode with the response they build.
 */
import test from "ava";
import { buildResponse } from "../../server/auth/build-response.js";
import { type Decision, type DecisionInput, decide } from "../../server/auth/decide.js";
import type { Extraction } from "../../server/auth/extract-credential.js";
import { resolvePolicy } from "../../server/auth/policy.js";
import type { Mode } from "../../server/config.js";
import type { Budget, TokenMatch } from "../../server/keystore/format/model.js";
import { BudgetCounters } from "../../server/usage/budget-counters.js";
import { budgetWindow, secondsUntil, WindowClock } from "../../server/usage/budget-window.js";
import type { TokenUsage } from "../../server/usage/token-usage.js";

const at = (iso: string) => Date.parse(iso);

// ---------------------------------------------------------------- windows

const WINDOWS: readonly (readonly [string, "day" | "month", string, string, string])[] = [
  ["midday", "day", "2026-11-23T12:00:00Z", "2026-11-23", "2026-11-24T00:00:00.000Z"],
  [
    "the first instant of a day",
    "day",
    "2026-11-23T00:00:00Z",
    "2026-11-23",
    "2026-11-24T00:00:00.000Z",
  ],
  [
    "the last millisecond of a day",
    "day",
    "2026-11-23T23:59:59.999Z",
    "2026-11-23",
    "2026-11-24T00:00:00.000Z",
  ],
  ["New Year's Eve", "day", "2026-12-31T23:00:00Z", "2026-12-31", "2027-01-01T00:00:00.000Z"],
  [
    "28 February in a leap year",
    "day",
    "2028-02-28T10:00:00Z",
    "2028-02-28",
    "2028-02-29T00:00:00.000Z",
  ],
  ["29 February", "day", "2028-02-29T23:59:59Z", "2028-02-29", "2028-03-01T00:00:00.000Z"],
  [
    "28 February in a common year",
    "day",
    "2027-02-28T10:00:00Z",
    "2027-02-28",
    "2027-03-01T00:00:00.000Z",
  ],
  ["mid-month", "month", "2026-11-23T12:00:00Z", "2026-11-01", "2026-12-01T00:00:00.000Z"],
  [
    "the first instant of a month",
    "month",
    "2026-11-01T00:00:00Z",
    "2026-11-01",
    "2026-12-01T00:00:00.000Z",
  ],
  [
    "the last millisecond of a month",
    "month",
    "2026-11-30T23:59:59.999Z",
    "2026-11-01",
    "2026-12-01T00:00:00.000Z",
  ],
  ["December", "month", "2026-12-15T00:00:00Z", "2026-12-01", "2027-01-01T00:00:00.000Z"],
  [
    "February in a leap year",
    "month",
    "2028-02-29T12:00:00Z",
    "2028-02-01",
    "2028-03-01T00:00:00.000Z",
  ],
  [
    "February in a century leap year",
    "month",
    "2000-02-29T12:00:00Z",
    "2000-02-01",
    "2000-03-01T00:00:00.000Z",
  ],
  [
    "February 1900 (not a leap year)",
    "month",
    "1900-02-28T12:00:00Z",
    "1900-02-01",
    "1900-03-01T00:00:00.000Z",
  ],
];

for (const [name, per, now, startDay, resetsAt] of WINDOWS) {
  test(`the ${per} window at ${name}`, (t) => {
    const window = budgetWindow(per, at(now));
    t.is(window.startDay, startDay);
    t.is(new Date(window.resetsAt).toISOString(), resetsAt);
    t.is(window.startsAt, at(`${startDay}T00:00:00Z`));
    t.deepEqual(new WindowClock().windowOf(per, at(now)), window);
  });
}

test("the window clock follows time across a boundary and back", (t) => {
  const clock = new WindowClock();
  t.is(clock.windowOf("day", at("2026-11-30T23:59:59Z")).startDay, "2026-11-30");
  t.is(clock.windowOf("day", at("2026-12-01T00:00:00Z")).startDay, "2026-12-01");
  t.is(clock.windowOf("month", at("2026-12-01T00:00:00Z")).startDay, "2026-12-01");
  t.is(clock.windowOf("month", at("2026-11-30T23:59:59Z")).startDay, "2026-11-01");
});

test("retry-after is whole seconds to the reset, at least one", (t) => {
  const reset = at("2026-11-24T00:00:00Z");
  t.is(secondsUntil(reset, at("2026-11-23T23:00:00Z")), 3600);
  t.is(secondsUntil(reset, at("2026-11-23T23:59:59.001Z")), 1);
  t.is(secondsUntil(reset, reset), 1);
});

// ---------------------------------------------------------------- counters

function usage(tokens: number): TokenUsage {
  return {
    model: "m",
    inputTokens: tokens,
    outputTokens: 0,
    cacheReadTokens: 0,
    cacheWriteTokens: 0,
  };
}
const DAILY: Budget = { tokens: 100, per: "day" };
const MONTHLY: Budget = { tokens: 1000, per: "month" };

test("counters add every kind of token to the client's day and month", (t) => {
  const counters = new BudgetCounters();
  const now = at("2026-11-23T12:00:00Z");
  counters.record(
    "a",
    { model: "m", inputTokens: 10, outputTokens: 20, cacheReadTokens: 3, cacheWriteTokens: 4 },
    now,
  );
  counters.record("a", usage(5), now);
  counters.record("b", usage(7), now);
  t.is(counters.spent("a", DAILY, now), 42);
  t.is(counters.spent("a", MONTHLY, now), 42);
  t.is(counters.spent("b", DAILY, now), 7);
  t.is(counters.spent("never-seen", DAILY, now), 0);
});

test("a new day resets the day and keeps the month; a new month resets both", (t) => {
  const counters = new BudgetCounters();
  counters.record("a", usage(30), at("2026-11-30T23:59:59Z"));
  t.is(counters.spent("a", DAILY, at("2026-11-30T23:59:59.999Z")), 30);
  counters.record("a", usage(5), at("2026-11-29T12:00:00Z") + 86_400_000);
  t.is(counters.spent("a", DAILY, at("2026-12-01T00:00:00Z")), 0);
  t.is(counters.spent("a", MONTHLY, at("2026-12-01T00:00:00Z")), 0);
});

test("usage with no tokens, or a nonsense count, changes nothing", (t) => {
  const counters = new BudgetCounters();
  const now = at("2026-11-23T12:00:00Z");
  counters.record("a", usage(0), now);
  counters.record("a", usage(Number.NaN), now);
  counters.record("a", usage(-5), now);
  t.is(counters.spent("a", DAILY, now), 0);
});

test("start-up recovery takes the current windows from the ledger", (t) => {
  const counters = new BudgetCounters();
  const asked: string[] = [];
  const ledger = {
    tokensSinceByClient(day: string) {
      asked.push(day);
      return new Map(
        day === "2026-11-23"
          ? [["a", 40]]
          : [
              ["a", 900],
              ["b", 5],
            ],
      );
    },
  };
  const now = at("2026-11-23T12:00:00Z");
  counters.recover(ledger, now);
  t.deepEqual(asked.sort(), ["2026-11-01", "2026-11-23"]);
  t.is(counters.spent("a", DAILY, now), 40);
  t.is(counters.spent("a", MONTHLY, now), 900);
  t.is(counters.spent("b", DAILY, now), 0);
  t.is(counters.spent("b", MONTHLY, now), 5);
});

test("spent is the larger of the replica's own count and the shared total", (t) => {
  const counters = new BudgetCounters();
  let shared = 0;
  const added: number[] = [];
  counters.share({ add: (_id, _window, tokens) => added.push(tokens), spent: () => shared });
  const now = at("2026-11-23T12:00:00Z");
  counters.record("a", usage(30), now);
  t.deepEqual(added, [30, 30], "one increment per window");
  t.is(counters.spent("a", DAILY, now), 30);
  shared = 80;
  t.is(counters.spent("a", DAILY, now), 80);
});

test("budget uses list the clients Check compared, with spent and reset", (t) => {
  const counters = new BudgetCounters();
  const now = at("2026-11-23T12:00:00Z");
  counters.record("a", usage(30), now);
  counters.record("unbudgeted", usage(30), now);
  counters.spent("a", DAILY, now);
  t.deepEqual(counters.budgetUses(now), [
    { clientId: "a", budget: DAILY, spent: 30, resetsAt: at("2026-11-24T00:00:00Z") },
  ]);
});

// ---------------------------------------------------------------- the decision

const NOW = at("2026-11-23T23:00:00Z");
const METERED: TokenMatch = {
  generation: 1,
  clientId: "metered",
  kind: "client",
  disabled: false,
  expiresAt: null,
  upstreamKey: "env:UPSTREAM",
  upstreamKeyIsDefault: false,
  routes: null,
  models: null,
  budget: DAILY,
};
const TOKEN: Extraction = {
  kind: "token",
  token: "kg_token",
  locations: ["bearer"],
  body: { kind: "absent" },
  presented: [{ location: "bearer", token: "kg_token" }],
  tokenElsewhere: false,
};

function decideWith(mode: Mode, spent: number, match: Partial<TokenMatch> = {}): Decision {
  const input: DecisionInput = {
    policy: resolvePolicy(mode, {}),
    generation: 1,
    path: "/v1/messages",
    bodyTruncated: false,
    extraction: TOKEN,
    lookup: {
      kind: "found",
      digest: "a".repeat(64),
      match: { ...METERED, ...match },
      upstreamKey: { kind: "value", value: "sk-ant-upstream" },
    },
    now: NOW,
    spent: () => spent,
  };
  return decide(input);
}

const SPENT: readonly (readonly [string, Mode, number, Partial<TokenMatch>, string])[] = [
  ["under budget", "enforce", 99, {}, "allow:known:-"],
  ["exactly spent", "enforce", 100, {}, "deny:budget_exhausted"],
  ["crossed by the last response", "enforce", 250, {}, "deny:budget_exhausted"],
  ["spent, recognize", "recognize", 100, {}, "deny:budget_exhausted"],
  ["under budget, recognize", "recognize", 5, {}, "allow:known:-"],
  [
    "spent, dry-run: passes as the client, swapped, counted",
    "dry-run",
    100,
    {},
    "allow:known:budget_exhausted",
  ],
  ["spent, off", "off", 100, {}, "allow:anonymous:-"],
  ["spent, internal client", "enforce", 100, { kind: "internal" }, "deny:budget_exhausted"],
  ["spent, no budget", "enforce", 1e9, { budget: undefined }, "allow:known:-"],
  [
    "spent, but disabled: the credential is refused first",
    "enforce",
    100,
    { disabled: true },
    "deny:client_disabled",
  ],
  [
    "spent, but route not allowed: forbidden first",
    "enforce",
    100,
    { routes: ["/other/"] },
    "deny:route_not_allowed",
  ],
];

for (const [name, mode, spent, match, expected] of SPENT) {
  test(`decision, budget ${name} (${mode})`, (t) => {
    const decision = decideWith(mode, spent, match);
    const shown =
      decision.outcome === "deny"
        ? `deny:${decision.reason}`
        : `allow:${decision.authMode}:${decision.wouldDeny ?? "-"}`;
    t.is(shown, expected);
    if (expected === "allow:known:budget_exhausted" && decision.outcome === "allow")
      t.is(decision.upstreamKey, "sk-ant-upstream");
  });
}

test("without a spent function a budget is never exhausted", (t) => {
  const input: DecisionInput = {
    policy: resolvePolicy("enforce", {}),
    generation: 1,
    path: "/",
    bodyTruncated: false,
    extraction: TOKEN,
    lookup: {
      kind: "found",
      digest: "a".repeat(64),
      match: METERED,
      upstreamKey: { kind: "none" },
    },
    now: NOW,
  };
  t.is(decide(input).outcome, "allow");
});

test("QUOTA_EXCEEDED is a 429 with retry-after to the window's reset, in the header and the body", (t) => {
  const decision = decideWith("enforce", 100, { budget: { tokens: 100, per: "month" } });
  t.like(decision, { outcome: "deny", reason: "budget_exhausted", retryAfter: 7 * 86_400 + 3600 });
  const response = buildResponse(
    decision,
    { upstreamHeader: "x-api-key", clientIdHeader: "x-client-id", metadataUpstreamKey: false },
    { requestId: "req-1", generation: 1 },
  );
  t.is(response.denied_response?.status.code, 429);
  t.is(response.status.code, 7);
  const headers = Object.fromEntries(
    (response.denied_response?.headers ?? []).map((h) => [h.header.key, h.header.value]),
  );
  t.is(headers["retry-after"], String(7 * 86_400 + 3600));
  t.deepEqual(JSON.parse(response.denied_response?.body ?? "{}"), {
    type: "QUOTA_EXCEEDED",
    message: "This API key has used its token budget; retry after the budget resets.",
    request_id: "req-1",
    retry_after: 7 * 86_400 + 3600,
  });
});
