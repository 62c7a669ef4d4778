/**
 * Budgets through the real bin: `keystore add --budget`, `keystore set-budget` to change
 * or `--clear` one, and the refusals (a bad budget exits 1, a malformed call 2), with
 * the file left valid and its comments kept; `keystore list` shows budget, spent and reset.
 */
import test from "ava";
import { readKeystoreFile } from "../../server/keystore/format/load.js";
import { utcDay, windowResetAt } from "../../server/usage/usage-day.js";
import { TokenUsageTable } from "../../server/usage/usage-table.js";
import { printedToken, workspace } from "./run-keygate.js";

const LOAD = { masterKeys: new Map(), env: {}, requireClients: false } as const;

test("add --budget writes the budget; set-budget changes it and --clear removes it", async (t) => {
  const ws = workspace(t);
  printedToken(await ws.run(["keystore", "init"]));
  printedToken(await ws.run(["keystore", "add", "metered", "--budget", "100000/day"]));
  const budgetOf = () =>
    readKeystoreFile(ws.keystore, LOAD).keystore.clients.find((c) => c.id === "metered")?.budget;
  t.deepEqual(budgetOf(), { tokens: 100000, per: "day" });
  t.regex(ws.read(), /budget: \{ ?tokens: 100000, per: day ?\}/);

  const changed = await ws.run(["keystore", "set-budget", "metered", "2_000_000/month"]);
  t.is(changed.code, 0, changed.stderr);
  t.is(changed.stdout, "");
  t.regex(changed.stderr, /client "metered" now has a budget of 2000000\/month/);
  t.deepEqual(budgetOf(), { tokens: 2_000_000, per: "month" });

  const again = await ws.run(["keystore", "set-budget", "metered", "2000000/month"]);
  t.regex(again.stderr, /already has a budget of 2000000\/month; nothing to do/);

  const cleared = await ws.run(["keystore", "set-budget", "metered", "--clear"]);
  t.is(cleared.code, 0, cleared.stderr);
  t.is(budgetOf(), undefined);
  t.notRegex(ws.read(), /^ +budget:/m, "only the starter's commented example is left");
  printedToken(await ws.run(["keystore", "add", "demo-2"]));
  t.is(
    readKeystoreFile(ws.keystore, LOAD).keystore.clients.find((c) => c.id === "demo")?.budget,
    undefined,
  );
});

const REFUSED: readonly (readonly [string, readonly string[], number, RegExp])[] = [
  ["a week", ["set-budget", "demo", "100/week"], 1, /must be TOKENS\/day or TOKENS\/month/],
  ["zero", ["set-budget", "demo", "0/day"], 1, /must be TOKENS\/day or TOKENS\/month/],
  ["a fraction", ["add", "x", "--budget", "1.5/day"], 1, /--budget must be TOKENS\/day/],
  ["both a budget and --clear", ["set-budget", "demo", "5/day", "--clear"], 2, /not both/],
  ["neither", ["set-budget", "demo"], 2, /needs TOKENS\/day or TOKENS\/month/],
  ["an unknown client", ["set-budget", "nobody", "5/day"], 1, /no client "nobody"/],
];

for (const [name, args, code, message] of REFUSED) {
  test(`set-budget and add --budget refuse ${name}`, async (t) => {
    const ws = workspace(t);
    printedToken(await ws.run(["keystore", "init"]));
    const before = ws.read();
    const result = await ws.run(["keystore", ...args]);
    t.is(result.code, code, result.stderr);
    t.regex(result.stderr, message);
    t.is(ws.read(), before, "nothing written");
  });
}

test("list shows each budget with what the ledger says the window spent and when it resets", async (t) => {
  const ws = workspace(t);
  printedToken(await ws.run(["keystore", "init"]));
  printedToken(await ws.run(["keystore", "add", "metered", "--budget", "1000/day"]));
  printedToken(await ws.run(["keystore", "add", "monthly", "--budget", "1000000/month"]));
  const now = Date.now();
  const table = TokenUsageTable.openForWriting(ws.db);
  const row = { model: "m", day: utcDay(now), requests: 1, outputTokens: 0 };
  const tokens = { cacheReadTokens: 0, cacheWriteTokens: 0 };
  table.add([
    { ...row, ...tokens, clientId: "metered", inputTokens: 1200 },
    { ...row, ...tokens, clientId: "monthly", inputTokens: 250_000 },
  ]);
  table.close();

  const json = JSON.parse((await ws.run(["keystore", "list", "--json"])).stdout) as {
    clients: { id: string; budget: unknown }[];
  };
  const byId = new Map(json.clients.map((client) => [client.id, client.budget]));
  t.is(byId.get("demo"), null);
  const dayReset = new Date(windowResetAt("day", now)).toISOString().replace(".000", "");
  t.deepEqual(byId.get("metered"), {
    tokens: 1000,
    per: "day",
    spent: 1200,
    exhausted: true,
    resets_at: dayReset,
  });
  t.like(byId.get("monthly"), { spent: 250_000, exhausted: false });

  const rows = (await ws.run(["keystore", "list"])).stdout.split("\n");
  t.regex(
    rows.find((line) => line.startsWith("metered ")) ?? "",
    /\s1000\/day\s+1200 \(exhausted\)\s+\S+Z$/,
  );
  t.regex(
    rows.find((line) => line.startsWith("monthly ")) ?? "",
    /\s1000000\/month\s+250000 \(25%\)\s+\S+Z$/,
  );
});
