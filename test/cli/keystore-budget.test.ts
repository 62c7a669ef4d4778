/**
 * Budgets through the real bin: `keystore add --budget`, `keystore set-budget` to change
 * or `--clear` one, and the refusals (a bad budget exits 1, a malformed call 2), with
 * the file left valid and its comments kept.
 */
import test from "ava";
import { readKeystoreFile } from "../../server/keystore/format/load.js";
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
  t.notRegex(ws.read(), /budget/);
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
