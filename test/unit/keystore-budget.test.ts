/**
 * The `budget` client field through every layer model.ts lists: schema and load (with
 * located errors), the store's record and lookup, and the editor that writes it.
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import test from "ava";
import { hashToken } from "../../server/crypto/token-hash.js";
import { editKeystore } from "../../server/keystore/edit/keystore-editor.js";
import { parseKeystore } from "../../server/keystore/format/load.js";
import { formatIssue, KeystoreError } from "../../server/keystore/format/model.js";
import { KeystoreStore } from "../../server/keystore/store/store.js";

const DIGEST = hashToken("kg-budget-test-token");
const OPTIONS = { file: "keystore.yaml", masterKeys: new Map(), env: {}, requireClients: true };

function keystoreText(budgetLine: string): string {
  return `version: 1
clients:
  - id: metered
    tokens:
      - sha256: ${DIGEST}
${budgetLine}
`;
}

function issuesOf(text: string): string[] {
  try {
    parseKeystore(text, OPTIONS);
  } catch (error) {
    if (error instanceof KeystoreError) return error.issues.map(formatIssue);
    throw error;
  }
  throw new Error("expected a KeystoreError");
}

test("a budget loads as tokens and a UTC window", (t) => {
  const loaded = parseKeystore(keystoreText("    budget: {tokens: 100000, per: day}"), OPTIONS);
  t.deepEqual(loaded.keystore.clients[0]?.budget, { tokens: 100000, per: "day" });
  const monthly = parseKeystore(
    keystoreText("    budget:\n      tokens: 5\n      per: month"),
    OPTIONS,
  );
  t.deepEqual(monthly.keystore.clients[0]?.budget, { tokens: 5, per: "month" });
});

test("a client without a budget has no budget field at all", (t) => {
  const loaded = parseKeystore(keystoreText(""), OPTIONS);
  t.false("budget" in (loaded.keystore.clients[0] ?? {}));
});

const INVALID: readonly (readonly [string, string, string])[] = [
  [
    "zero tokens",
    "    budget: {tokens: 0, per: day}",
    "keystore.yaml:6:22: clients[0].budget.tokens: must be a positive whole number of tokens, e.g. 100000",
  ],
  [
    "fractional tokens",
    "    budget: {tokens: 1.5, per: day}",
    "keystore.yaml:6:22: clients[0].budget.tokens: must be a positive whole number of tokens, e.g. 100000",
  ],
  [
    "a week",
    "    budget: {tokens: 10, per: week}",
    "keystore.yaml:6:31: clients[0].budget.per: must be day or month (windows are UTC)",
  ],
  [
    "no window",
    "    budget: {tokens: 10}",
    "keystore.yaml:6:13: clients[0].budget.per: is required",
  ],
  [
    "a number instead of a mapping",
    "    budget: 100000",
    "keystore.yaml:6:13: clients[0].budget: must be a mapping {tokens: N, per: day | month}, e.g. {tokens: 100000, per: day}",
  ],
  [
    "an unknown field",
    "    budget: {tokens: 10, per: day, burst: 5}",
    "keystore.yaml:6:36: clients[0].budget.burst: unknown field (allowed: tokens, per)",
  ],
];

for (const [name, line, expected] of INVALID) {
  test(`an invalid budget is located: ${name}`, (t) => {
    t.deepEqual(issuesOf(keystoreText(line)), [expected]);
  });
}

test("the store keeps the budget in the client's record and a lookup returns it", (t) => {
  const store = KeystoreStore.open(":memory:");
  t.teardown(() => store.close());
  const loaded = parseKeystore(keystoreText("    budget: {tokens: 7, per: month}"), OPTIONS);
  store.apply(loaded, new Date("2026-06-01T00:00:00Z"));
  t.deepEqual(store.lookup(DIGEST)?.budget, { tokens: 7, per: "month" });
  const without = parseKeystore(keystoreText(""), OPTIONS);
  store.apply(without, new Date("2026-06-01T00:00:01Z"));
  t.is(store.lookup(DIGEST)?.budget, undefined);
});

test("the editor writes a budget on one line after kind, replaces it, and clears it", async (t) => {
  const dir = mkdtempSync(path.join(tmpdir(), "keygate-budget-"));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const file = path.join(dir, "keystore.yaml");
  writeFileSync(file, `${keystoreText("    kind: client # a comment that stays")}`, {
    mode: 0o600,
  });
  const edit = (budget: { tokens: number; per: "day" | "month" } | undefined) =>
    editKeystore(file, OPTIONS, (draft) => draft.client("metered").setBudget(budget));

  t.true((await edit({ tokens: 100000, per: "day" })).written);
  t.regex(
    readFileSync(file, "utf8"),
    /kind: client # a comment that stays\n {4}budget: \{tokens: 100000, per: day\}\n/,
  );
  t.false(
    (await edit({ tokens: 100000, per: "day" })).written,
    "an unchanged budget writes nothing",
  );
  await edit({ tokens: 5, per: "month" });
  t.regex(readFileSync(file, "utf8"), /budget: \{tokens: 5, per: month\}/);
  await edit(undefined);
  t.notRegex(readFileSync(file, "utf8"), /budget/);
  t.regex(readFileSync(file, "utf8"), /a comment that stays/);
});
