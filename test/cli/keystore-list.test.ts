/**
 * `keygate keystore list [--json]` through the real bin: what an operator needs about each
 * client, last use from the server's database, and never a secret.
 */
import test from "ava";
import type { ListedClient } from "../../server/cli/list-output.js";
import { hashToken } from "../../server/crypto/token-hash.js";
import { readKeystoreFile } from "../../server/keystore/format/load.js";
import { KeystoreStore } from "../../server/keystore/store/store.js";
import { utcDay, utcMonthStart } from "../../server/usage/usage-day.js";
import { type DailyUsage, TokenUsageTable } from "../../server/usage/usage-table.js";
import { printedToken, type Workspace, workspace } from "./run-keygate.js";

const UPSTREAM_SECRET = "sk-ant-api03-do-not-print-me";
const LAST_USE = Date.parse("2026-11-20T08:30:00Z");
const FULL_DIGEST = /[0-9a-fA-F]{64}/;

interface Listing {
  keystore: string;
  usage_from: string | null;
  clients: ListedClient[];
}

/** A keystore with every kind of upstream key, an expiring token and a disabled client. */
async function provision(ws: Workspace): Promise<{ tokens: string[] }> {
  const tokens = [printedToken(await ws.run(["keystore", "init"]))];
  tokens.push(
    printedToken(
      await ws.run(["keystore", "add", "sealed", "--name", "Sealed key", "--upstream-key-stdin"], {
        stdin: UPSTREAM_SECRET,
      }),
    ),
    printedToken(
      await ws.run([
        "keystore",
        "add",
        "from-env",
        "--upstream-key-env",
        "FROM_ENV_KEY",
        "--expires",
        "2099-01-01T00:00:00Z",
      ]),
    ),
    printedToken(await ws.run(["keystore", "add", "health", "--internal"])),
  );
  tokens.push(printedToken(await ws.run(["keystore", "rotate", "from-env", "--grace", "2d"])));
  t_ok(await ws.run(["keystore", "disable", "health"]));
  return { tokens };
}

function t_ok(result: { code: number | null; stderr: string }): void {
  if (result.code !== 0) throw new Error(result.stderr);
}

/** The server's database with one generation and usage for "sealed". */
function seedDatabase(ws: Workspace): void {
  const store = KeystoreStore.open(ws.db);
  try {
    store.apply(
      readKeystoreFile(ws.keystore, { masterKeys: new Map(), env: {}, requireClients: false }),
      new Date(),
    );
    store.recordUsage([{ clientId: "sealed", lastUsedAt: LAST_USE, count: 42 }]);
  } finally {
    store.close();
  }
  const table = TokenUsageTable.openForWriting(ws.db);
  try {
    table.add(SEEDED_TOKENS.map(([day, inputTokens]) => tokenRow(day, inputTokens)));
  } finally {
    table.close();
  }
}

/**
 * "sealed"'s token usage: 165 today, 1000 on the 1st of the month (when that is not
 * today) and 5000 on the last day of the month before, which this month never counts.
 */
const NOW = Date.now();
const TODAY = utcDay(NOW);
const MONTH_START = utcMonthStart(NOW);
const SEEDED_TOKENS: readonly (readonly [string, number])[] = [
  [TODAY, 150],
  ...(MONTH_START === TODAY ? [] : [[MONTH_START, 1000] as const]),
  [utcDay(Date.parse(`${MONTH_START}T00:00:00Z`) - 1), 5000],
];
const TOKENS_TODAY = 165;
const TOKENS_THIS_MONTH = MONTH_START === TODAY ? 165 : 1165;

function tokenRow(day: string, inputTokens: number): DailyUsage {
  return {
    clientId: "sealed",
    model: "claude-sonnet-4",
    day,
    requests: 1,
    inputTokens,
    outputTokens: day === TODAY ? 10 : 0,
    cacheReadTokens: day === TODAY ? 5 : 0,
    cacheWriteTokens: 0,
  };
}

test("list --json: ids, names, token counts and expiries, key sources, status, last use", async (t) => {
  const ws = workspace(t);
  await provision(ws);
  seedDatabase(ws);
  const result = await ws.run(["keystore", "list", "--json"]);
  t.is(result.code, 0, result.stderr);
  const listing = JSON.parse(result.stdout) as Listing;
  t.is(listing.usage_from, ws.db);
  const byId = new Map(listing.clients.map((client) => [client.id, client]));
  t.deepEqual([...byId.keys()], ["demo", "sealed", "from-env", "health"]);
  t.like(byId.get("sealed"), {
    name: "Sealed key",
    kind: "client",
    disabled: false,
    token_count: 1,
    upstream_key: { source: "enc", kid: "k1" },
    last_used_at: "2026-11-20T08:30:00Z",
    use_count: 42,
    tokens_today: TOKENS_TODAY,
    tokens_this_month: TOKENS_THIS_MONTH,
  });
  const fromEnv = byId.get("from-env");
  t.like(fromEnv, {
    token_count: 2,
    expired_token_count: 0,
    upstream_key: { source: "env", variable: "FROM_ENV_KEY" },
    last_used_at: null,
    use_count: 0,
    tokens_today: 0,
    tokens_this_month: 0,
  });
  const graceEnd = Date.parse(fromEnv?.next_expiry ?? "");
  t.true(Math.abs(graceEnd - (Date.now() + 2 * 86_400_000)) < 120_000, "the rotation's grace end");
  t.deepEqual(
    fromEnv?.tokens.map((token) => token.sha256_prefix.length),
    [12, 12],
  );
  t.like(byId.get("health"), { kind: "internal", disabled: true });
  t.like(byId.get("demo"), { upstream_key: { source: "none" } });
});

test("list prints an aligned table with a header", async (t) => {
  const ws = workspace(t);
  await provision(ws);
  seedDatabase(ws);
  const result = await ws.run(["keystore", "list"]);
  t.is(result.code, 0, result.stderr);
  const [header, ...rows] = result.stdout.trimEnd().split("\n");
  t.regex(
    header ?? "",
    /^ID\s+NAME\s+KIND\s+STATUS\s+TOKENS\s+NEXT EXPIRY\s+UPSTREAM KEY\s+LAST USE\s+USES\s+TOKENS TODAY\s+TOKENS MONTH\s+BUDGET\s+SPENT\s+RESETS$/,
  );
  t.is(rows.length, 4);
  t.regex(
    rows[1] ?? "",
    new RegExp(
      `^sealed\\s+Sealed key\\s+client\\s+enabled\\s+1\\s+-\\s+enc \\(k1\\)\\s+2026-11-20T08:30:00Z\\s+42\\s+${TOKENS_TODAY}\\s+${TOKENS_THIS_MONTH}\\s+-\\s+-\\s+-$`,
    ),
  );
  t.regex(rows[3] ?? "", /^health\s+.*internal\s+disabled\s.*- \(internal\)/);
});

test("list without a database shows no last use and says why", async (t) => {
  const ws = workspace(t);
  await provision(ws);
  const json = JSON.parse((await ws.run(["keystore", "list", "--json"])).stdout) as Listing;
  t.is(json.usage_from, null);
  t.true(json.clients.every((client) => client.use_count === null && client.last_used_at === null));
  t.true(
    json.clients.every(
      (client) => client.tokens_today === null && client.tokens_this_month === null,
    ),
  );
  const table = await ws.run(["keystore", "list"]);
  t.regex(table.stderr, /no database at .*last use and token usage not shown/);
});

test("list never prints a secret: no token, no full digest, no upstream key or its ciphertext", async (t) => {
  const ws = workspace(t);
  const { tokens } = await provision(ws);
  seedDatabase(ws);
  const sealed = /upstream_key: (enc:\S+)/.exec(ws.read())?.[1] ?? "enc:missing";
  for (const args of [
    ["keystore", "list"],
    ["keystore", "list", "--json"],
  ]) {
    const { stdout, stderr } = await ws.run(args);
    const output = stdout + stderr;
    t.false(FULL_DIGEST.test(output), `no full digest in ${args.join(" ")}`);
    t.false(output.includes(UPSTREAM_SECRET));
    t.false(output.includes(sealed.slice("enc:v1:k1:".length)));
    t.false(output.includes(ws.masterKey.slice(3)));
    for (const token of tokens) {
      t.false(output.includes(token));
      t.true(output.includes(hashToken(token).slice(0, 12)) || args.length === 2);
    }
  }
});

test("list on an invalid keystore fails with its issues, exit 1", async (t) => {
  const ws = workspace(t);
  ws.write("version: 1\nclients:\n  - id: Bad Id\n    tokens: []\n");
  const result = await ws.run(["keystore", "list"]);
  t.is(result.code, 1);
  t.regex(
    result.stderr,
    /^keygate: .*keystore\.yaml is not a valid keystore\n.*keystore\.yaml:3:\d+: /,
  );
});

test("list with an unknown flag is a usage error", async (t) => {
  const ws = workspace(t);
  const result = await ws.run(["keystore", "list", "--yaml"]);
  t.is(result.code, 2);
  t.regex(result.stderr, /usage: keygate/);
});
