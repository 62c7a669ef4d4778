/**
 * `keygate usage [--since T] [--client ID] [--json]` through the real bin: totals per
 * client and model from the server's database, read-only, with clear failures.
 */
import { mkdirSync } from "node:fs";
import path from "node:path";
import test from "ava";
import Database from "better-sqlite3";
import type { UsageReport } from "../../server/cli/usage-report-output.js";
import { utcDay, utcMonthStart } from "../../server/usage/usage-day.js";
import { type DailyUsage, TokenUsageTable } from "../../server/usage/usage-table.js";
import { writeV3Database } from "../helpers/store-db.js";
import { type Workspace, workspace } from "./run-keygate.js";

const DAY_MS = 86_400_000;
const NOW = Date.now();
const TODAY = utcDay(NOW);
const LAST_MONTH = utcDay(Date.parse(`${utcMonthStart(NOW)}T00:00:00Z`) - 1);
/** Always before LAST_MONTH, which is at most 31 days back. */
const LONG_AGO = utcDay(NOW - 60 * DAY_MS);

function row(
  clientId: string,
  model: string,
  day: string,
  requests: number,
  tokens: [number, number, number, number],
): DailyUsage {
  const [inputTokens, outputTokens, cacheReadTokens, cacheWriteTokens] = tokens;
  return {
    clientId,
    model,
    day,
    requests,
    inputTokens,
    outputTokens,
    cacheReadTokens,
    cacheWriteTokens,
  };
}

/** Today's usage of two clients, and older rows that the default window leaves out. */
function seed(ws: Workspace): void {
  const table = TokenUsageTable.openForWriting(ws.db);
  try {
    table.add([
      row("alpha", "claude-sonnet-4", TODAY, 3, [300, 120, 50, 10]),
      row("alpha", "claude-haiku-4", TODAY, 1, [10, 5, 0, 0]),
      row("beta", "gpt-4o", TODAY, 2, [20, 8, 4, 0]),
      row("alpha", "claude-sonnet-4", LAST_MONTH, 100, [100_000, 0, 0, 0]),
      row("beta", "gpt-4o", LONG_AGO, 1, [1, 1, 1, 1]),
    ]);
  } finally {
    table.close();
  }
}

async function report(ws: Workspace, args: readonly string[]): Promise<UsageReport> {
  const result = await ws.run(["usage", "--json", ...args]);
  if (result.code !== 0) throw new Error(result.stderr);
  return JSON.parse(result.stdout) as UsageReport;
}

test("usage --json: totals per client and model since the 1st of this month (UTC) by default", async (t) => {
  const ws = workspace(t);
  seed(ws);
  const json = await report(ws, []);
  t.is(json.since, utcMonthStart(NOW));
  t.is(json.database, ws.db);
  t.is(json.client, null);
  const thisMonth = (model: string) => json.usage.find((entry) => entry.model === model);
  t.deepEqual(thisMonth("claude-sonnet-4"), {
    client: "alpha",
    model: "claude-sonnet-4",
    requests: 3,
    input_tokens: 300,
    output_tokens: 120,
    cache_read_tokens: 50,
    cache_write_tokens: 10,
    total_tokens: 480,
  });
  t.deepEqual(
    json.usage.map((entry) => `${entry.client}/${entry.model}`),
    ["alpha/claude-haiku-4", "alpha/claude-sonnet-4", "beta/gpt-4o"],
    "ordered by client, then model; last month left out",
  );
  t.is(
    json.total.total_tokens,
    json.usage.reduce((sum, entry) => sum + entry.total_tokens, 0),
  );
});

test("usage --since takes a duration, a date or an RFC 3339 time; --client narrows to one", async (t) => {
  const ws = workspace(t);
  seed(ws);
  const lastDay = await report(ws, ["--since", "1d"]);
  t.is(lastDay.since, utcDay(NOW - DAY_MS));
  t.is(lastDay.total.total_tokens, 480 + 15 + 32);
  const all = await report(ws, ["--since", LAST_MONTH]);
  t.is(all.total.requests, 3 + 1 + 2 + 100);
  const rfc = await report(ws, ["--since", `${LONG_AGO}T23:59:59Z`]);
  t.is(rfc.since, LONG_AGO, "counted from the start of the UTC day it falls in");
  t.is(rfc.total.requests, 3 + 1 + 2 + 100 + 1);
  const beta = await report(ws, ["--since", "90d", "--client", "beta"]);
  t.is(beta.client, "beta");
  t.deepEqual(
    beta.usage.map((entry) => [entry.client, entry.requests]),
    [["beta", 3]],
  );
});

test("usage prints an aligned table with numbers on the right and a total line", async (t) => {
  const ws = workspace(t);
  seed(ws);
  const result = await ws.run(["usage", "--since", "0"]);
  t.is(result.code, 0, result.stderr);
  t.regex(result.stderr, new RegExp(`token usage since ${TODAY} \\(UTC\\) from `));
  const lines = result.stdout.trimEnd().split("\n");
  t.regex(
    lines[0] ?? "",
    /^CLIENT\s+MODEL\s+REQUESTS\s+INPUT\s+OUTPUT\s+CACHE READ\s+CACHE WRITE\s+TOTAL$/,
  );
  t.regex(lines[2] ?? "", /^alpha\s+claude-sonnet-4\s+3\s+300\s+120\s+50\s+10\s+480$/);
  t.regex(lines.at(-1) ?? "", /^total\s+6\s+330\s+133\s+54\s+10\s+527$/);
  const ends = new Set(lines.map((line) => line.length));
  t.is(ends.size, 1, "every line ends in the TOTAL column");
});

test("usage reads the database without writing to it, beside a writer holding its lock", async (t) => {
  const ws = workspace(t);
  seed(ws);
  const writer = new Database(ws.db);
  t.teardown(() => writer.close());
  writer.exec("BEGIN IMMEDIATE");
  const result = await ws.run(["usage", "--json"]);
  writer.exec("ROLLBACK");
  t.is(result.code, 0, result.stderr);
  t.is((JSON.parse(result.stdout) as UsageReport).total.requests, 6);
});

test("usage without a database is one clear line, exit 1", async (t) => {
  const ws = workspace(t);
  const result = await ws.run(["usage"]);
  t.is(result.code, 1);
  t.is(result.stdout, "");
  t.regex(
    result.stderr,
    /^keygate: no database at .*keystore\.db \(KEYGATE_DB\): no usage recorded there\n$/,
  );
});

test("usage on a database older than token usage reports nothing and leaves it as it was", async (t) => {
  const ws = workspace(t);
  mkdirSync(path.dirname(ws.db), { recursive: true });
  writeV3Database(ws.db, []);
  const result = await ws.run(["usage", "--json"]);
  t.is(result.code, 0, result.stderr);
  t.deepEqual((JSON.parse(result.stdout) as UsageReport).usage, []);
  const db = new Database(ws.db, { readonly: true });
  t.teardown(() => db.close());
  t.is(db.pragma("user_version", { simple: true }), 3);
});

const BAD_INVOCATIONS: readonly { name: string; args: string[]; code: number; message: RegExp }[] =
  [
    { name: "an unknown flag", args: ["--yaml"], code: 2, message: /usage: keygate/ },
    { name: "an argument", args: ["alpha"], code: 2, message: /unexpected argument/ },
    { name: "--since without a value", args: ["--since"], code: 2, message: /usage: keygate/ },
    {
      name: "a --since that is no time",
      args: ["--since", "yesterday"],
      code: 1,
      message: /--since must be a date/,
    },
    {
      name: "a date that does not exist",
      args: ["--since", "2026-02-30"],
      code: 1,
      message: /not a real date/,
    },
    {
      name: "a duration back beyond any date",
      args: ["--since", "999999999999d"],
      code: 1,
      message: /not a real date/,
    },
    {
      name: "a client id that cannot be one",
      args: ["--client", "Not An Id"],
      code: 1,
      message: /invalid client id/,
    },
  ];

for (const bad of BAD_INVOCATIONS) {
  test(`usage with ${bad.name} exits ${bad.code}`, async (t) => {
    const ws = workspace(t);
    seed(ws);
    const result = await ws.run(["usage", ...bad.args]);
    t.is(result.code, bad.code);
    t.regex(result.stderr, bad.message);
    t.is(result.stdout, "");
  });
}
