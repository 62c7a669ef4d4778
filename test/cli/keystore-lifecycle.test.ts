/**
 * `rotate`, `revoke`, `disable`, `enable`, `remove` and `set-upstream-key` through the
 * real bin, on hand-written keystores whose digests and expiries are known.
 */
import { statSync } from "node:fs";
import test from "ava";
import { decryptSecret, parseMasterKeys } from "../../server/crypto/aes-gcm.js";
import { hashToken } from "../../server/crypto/token-hash.js";
import { DEFAULTS_AAD } from "../../server/keystore/edit/keystore-editor.js";
import { readKeystoreFile } from "../../server/keystore/format/load.js";
import type { KeystoreClient } from "../../server/keystore/format/model.js";
import { digestStartingWith, printedToken, type Workspace, workspace } from "./run-keygate.js";

const LOAD = { masterKeys: new Map(), env: {}, requireClients: false } as const;
const HOUR = 3_600_000;
const A = digestStartingWith("aaaa1111", "1");
const B = digestStartingWith("aaaa1111", "2"); // shares its first 8 characters with A
const C = digestStartingWith("cccc3333", "3");
const PAST = "2001-01-01T00:00:00Z";
const SOON = new Date(Date.now() + HOUR).toISOString().replace(/\.\d+Z$/, "Z");

/** alpha: two live tokens; beta: one token that expires in an hour and one long expired; gamma: internal. */
function seed(ws: Workspace): void {
  ws.write(`version: 1
clients:
  - id: alpha
    tokens:
      - sha256: ${A}
      - sha256: ${B}
    upstream_key: env:ALPHA_KEY
  - id: beta
    tokens:
      - sha256: ${C}
        expires: ${SOON}
      - sha256: ${digestStartingWith("dddd", "4")}
        expires: ${PAST}
  - id: gamma
    tokens:
      - sha256: ${digestStartingWith("eeee", "5")}
    kind: internal
`);
}

function client(ws: Workspace, id: string): KeystoreClient {
  const found = readKeystoreFile(ws.keystore, LOAD).keystore.clients.find((c) => c.id === id);
  if (found === undefined) throw new Error(`no client ${id}`);
  return found;
}

test("rotate without --grace replaces every old token at once and prints only the new one", async (t) => {
  const ws = workspace(t);
  seed(ws);
  const result = await ws.run(["keystore", "rotate", "alpha"]);
  const token = printedToken(result);
  t.deepEqual(client(ws, "alpha").tokens, [{ digest: hashToken(token), expiresAt: null }]);
  t.regex(result.stderr, /removed 2 old tokens/);
});

test("rotate --grace 24h expires the old tokens a day from now; the new one does not expire", async (t) => {
  const ws = workspace(t);
  seed(ws);
  const before = Date.now();
  const token = printedToken(await ws.run(["keystore", "rotate", "alpha", "--grace", "24h"]));
  const tokens = client(ws, "alpha").tokens;
  t.deepEqual(
    tokens.map((entry) => entry.digest),
    [A, B, hashToken(token)],
  );
  for (const old of tokens.slice(0, 2)) {
    t.true(Math.abs((old.expiresAt ?? 0) - (before + 24 * HOUR)) < 60_000);
  }
  t.is(tokens[2]?.expiresAt, null);
});

test("rotate --grace never extends an earlier expiry, and clears tokens that already expired", async (t) => {
  const ws = workspace(t);
  seed(ws);
  const token = printedToken(await ws.run(["keystore", "rotate", "beta", "--grace", "7d"]));
  t.deepEqual(client(ws, "beta").tokens, [
    { digest: C, expiresAt: Date.parse(SOON) },
    { digest: hashToken(token), expiresAt: null },
  ]);
});

test("rotate --expires gives the new token an expiry", async (t) => {
  const ws = workspace(t);
  seed(ws);
  printedToken(await ws.run(["keystore", "rotate", "alpha", "--expires", "2099-06-01T00:00:00Z"]));
  t.is(client(ws, "alpha").tokens[0]?.expiresAt, Date.parse("2099-06-01T00:00:00Z"));
});

for (const [name, args, message] of [
  ["an unknown client", ["keystore", "rotate", "nobody"], /no client "nobody"/],
  [
    "a grace that is not a duration",
    ["keystore", "rotate", "alpha", "--grace", "1 day"],
    /--grace must be a duration/,
  ],
] as const) {
  test(`rotate with ${name} fails, exit 1, file untouched`, async (t) => {
    const ws = workspace(t);
    seed(ws);
    const before = ws.read();
    const result = await ws.run([...args]);
    t.is(result.code, 1);
    t.is(result.stdout, "");
    t.regex(result.stderr, message);
    t.is(ws.read(), before);
  });
}

test("revoke --token removes exactly the token whose digest starts with the prefix", async (t) => {
  const ws = workspace(t);
  seed(ws);
  const result = await ws.run([
    "keystore",
    "revoke",
    "alpha",
    "--token",
    B.slice(0, 12).toUpperCase(),
  ]);
  t.is(result.code, 0, result.stderr);
  t.is(result.stdout, "");
  t.deepEqual(
    client(ws, "alpha").tokens.map((entry) => entry.digest),
    [A],
  );
});

for (const [name, prefix, message] of [
  [
    "an ambiguous prefix",
    A.slice(0, 8),
    /matches 2 tokens of client "alpha"; give more characters/,
  ],
  ["an unknown prefix", "0123456789ab", /has no token whose SHA-256 starts with 0123456789ab/],
  ["another client's token", C.slice(0, 12), /has no token whose SHA-256 starts with/],
  ["a prefix too short to be safe", "aaaa", /first 8 to 64 hex characters/],
  ["a prefix that is not hex", "kg_abcdefgh", /first 8 to 64 hex characters/],
] as const) {
  test(`revoke --token with ${name} fails, exit 1, file untouched`, async (t) => {
    const ws = workspace(t);
    seed(ws);
    const before = ws.read();
    const result = await ws.run(["keystore", "revoke", "alpha", "--token", prefix]);
    t.is(result.code, 1);
    t.regex(result.stderr, message);
    t.is(ws.read(), before);
  });
}

test("revoke without --token removes every token of the client, and only its", async (t) => {
  const ws = workspace(t);
  seed(ws);
  const result = await ws.run(["keystore", "revoke", "alpha"]);
  t.is(result.code, 0, result.stderr);
  t.deepEqual(client(ws, "alpha").tokens, []);
  t.is(client(ws, "beta").tokens.length, 2);
  t.is(client(ws, "gamma").tokens.length, 1);
  t.false(ws.read().includes(A));
});

test("revoke --token takes the full digest too", async (t) => {
  const ws = workspace(t);
  seed(ws);
  t.is((await ws.run(["keystore", "revoke", "alpha", "--token", A])).code, 0);
  t.deepEqual(
    client(ws, "alpha").tokens.map((entry) => entry.digest),
    [B],
  );
});

test("disable and enable toggle the client; repeating one changes nothing and writes nothing", async (t) => {
  const ws = workspace(t);
  seed(ws);
  t.is((await ws.run(["keystore", "disable", "alpha"])).code, 0);
  t.true(client(ws, "alpha").disabled);
  t.regex(
    ws.read(),
    /upstream_key: env:ALPHA_KEY\n {4}disabled: true\n/,
    "where DESIGN §4 puts it",
  );

  const { ino, mtimeMs } = statSync(ws.keystore);
  const again = await ws.run(["keystore", "disable", "alpha"]);
  t.is(again.code, 0);
  t.regex(again.stderr, /already disabled; nothing to do/);
  t.like(statSync(ws.keystore), { ino, mtimeMs });

  t.is((await ws.run(["keystore", "enable", "alpha"])).code, 0);
  t.false(client(ws, "alpha").disabled);
  t.regex((await ws.run(["keystore", "enable", "beta"])).stderr, /already enabled/);
});

test("remove deletes the client's entry", async (t) => {
  const ws = workspace(t);
  seed(ws);
  t.is((await ws.run(["keystore", "remove", "beta"])).code, 0);
  const ids = readKeystoreFile(ws.keystore, LOAD).keystore.clients.map((c) => c.id);
  t.deepEqual(ids, ["alpha", "gamma"]);
  t.regex((await ws.run(["keystore", "remove", "beta"])).stderr, /no client "beta"/);
});

test("remove of the last client is refused in enforce mode and allowed in recognize mode", async (t) => {
  const ws = workspace(t);
  const token = "single-client-token";
  ws.write(
    `version: 1\nclients:\n  - id: only\n    tokens:\n      - sha256: ${hashToken(token)}\n`,
  );
  const before = ws.read();
  const refused = await ws.run(["keystore", "remove", "only"]);
  t.is(refused.code, 1);
  t.regex(refused.stderr, /would leave .* invalid, so nothing was written\n.*enforce mode/);
  t.is(ws.read(), before);

  const allowed = await ws.run(["keystore", "remove", "only"], {
    env: { KEYGATE_MODE: "recognize" },
  });
  t.is(allowed.code, 0, allowed.stderr);
  t.deepEqual(readKeystoreFile(ws.keystore, LOAD).keystore.clients, []);
});

test("set-upstream-key replaces the key with stdin's, sealed for that client; never in clear", async (t) => {
  const ws = workspace(t);
  seed(ws);
  const secret = "sk-ant-api03-rotated-provider-key";
  const result = await ws.run(["keystore", "set-upstream-key", "alpha"], { stdin: secret });
  t.is(result.code, 0, result.stderr);
  t.is(result.stdout, "");
  t.false(ws.read().includes(secret));
  const sealed = client(ws, "alpha").upstreamKey ?? "";
  t.like(decryptSecret(sealed, "alpha", parseMasterKeys(ws.masterKey)), {
    ok: true,
    value: secret,
  });
});

test("set-upstream-key --defaults seals the shared default under the defaults AAD", async (t) => {
  const ws = workspace(t);
  seed(ws);
  const secret = "sk-ant-shared-default";
  t.is((await ws.run(["keystore", "set-upstream-key", "--defaults"], { stdin: secret })).code, 0);
  const { keystore } = readKeystoreFile(ws.keystore, LOAD);
  t.like(
    decryptSecret(keystore.defaultUpstreamKey ?? "", DEFAULTS_AAD, parseMasterKeys(ws.masterKey)),
    {
      ok: true,
      value: secret,
    },
  );
  t.regex(ws.read(), /^version: 1\ndefaults:\n {2}upstream_key: enc:v1:k1:\S+\nclients:/);
});

for (const [name, args, stdin, code, message] of [
  ["an internal client", ["gamma"], "sk", 1, /internal .* would never be used/],
  ["an unknown client", ["nobody"], "sk", 1, /no client "nobody"/],
  ["an empty stdin", ["alpha"], "", 1, /no upstream key on stdin/],
  ["two keys on stdin", ["alpha"], "sk-1\nsk-2\n", 1, /line break/],
  ["neither <id> nor --defaults", [], "sk", 2, /needs <id> or --defaults/],
  ["both <id> and --defaults", ["alpha", "--defaults"], "sk", 2, /needs <id> or --defaults/],
] as const) {
  test(`set-upstream-key with ${name} fails (exit ${code}), file untouched`, async (t) => {
    const ws = workspace(t);
    seed(ws);
    const before = ws.read();
    const result = await ws.run(["keystore", "set-upstream-key", ...args], { stdin });
    t.is(result.code, code);
    t.regex(result.stderr, message);
    t.is(ws.read(), before);
  });
}
