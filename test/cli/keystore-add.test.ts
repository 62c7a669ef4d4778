/**
 * `keygate keystore add` through the real bin: the token on stdout only, its digest (and
 * nothing secret) in keystore.yaml, upstream keys sealed, concurrent runs serialised by
 * the lock, and the operator's comments and layout left alone.
 */
import { chmodSync, readdirSync, statSync } from "node:fs";
import test from "ava";
import { decryptSecret, parseMasterKeys } from "../../server/crypto/aes-gcm.js";
import { hasValidChecksum } from "../../server/crypto/token-format.js";
import { hashToken } from "../../server/crypto/token-hash.js";
import { readKeystoreFile } from "../../server/keystore/format/load.js";
import { printedToken, workspace } from "./run-keygate.js";

const LOAD = { masterKeys: new Map(), env: {}, requireClients: false } as const;
const HOUR = 3_600_000;

test("add prints only the new token on stdout and writes only its digest", async (t) => {
  const ws = workspace(t);
  printedToken(await ws.run(["keystore", "init"]));
  const result = await ws.run(["keystore", "add", "lightning-prod"]);
  const token = printedToken(result);
  t.true(hasValidChecksum(token));
  t.regex(result.stderr, /added client "lightning-prod"/);
  const text = ws.read();
  t.true(text.includes(`sha256: ${hashToken(token)}`));
  t.false(text.includes(token), "the token itself never reaches the file");
  const client = readKeystoreFile(ws.keystore, LOAD).keystore.clients.at(-1);
  t.like(client, { id: "lightning-prod", kind: "client", disabled: false, upstreamKey: null });
});

test("add writes the name, routes, models, expiry and kind it is given", async (t) => {
  const ws = workspace(t);
  printedToken(await ws.run(["keystore", "init"]));
  const before = Date.now();
  printedToken(
    await ws.run([
      "keystore",
      "add",
      "batch.jobs_2",
      "--name",
      "Batch jobs: nightly",
      "--routes",
      "/v1/messages, /services/",
      "--models",
      "claude-sonnet-*,claude-haiku-4",
      "--expires",
      "90d",
      "--internal",
    ]),
  );
  printedToken(await ws.run(["keystore", "add", "dated", "--expires", "2099-01-02T03:04:05Z"]));
  const [, batch, dated] = readKeystoreFile(ws.keystore, LOAD).keystore.clients;
  t.like(batch, {
    name: "Batch jobs: nightly",
    routes: ["/v1/messages", "/services/"],
    models: ["claude-sonnet-*", "claude-haiku-4"],
    kind: "internal",
  });
  const expiresAt = batch?.tokens[0]?.expiresAt ?? 0;
  t.true(Math.abs(expiresAt - (before + 90 * 24 * HOUR)) < 60_000);
  t.is(dated?.tokens[0]?.expiresAt, Date.parse("2099-01-02T03:04:05Z"));
  t.regex(ws.read(), /routes: \[\/v1\/messages, \/services\/\]/, "allow-lists on one line");
});

test("--upstream-key-stdin seals the key with the newest master key, bound to the client id", async (t) => {
  const ws = workspace(t);
  printedToken(await ws.run(["keystore", "init"]));
  const keys = `k1:${Buffer.alloc(32, 1).toString("base64")},k2:${Buffer.alloc(32, 2).toString("base64")}`;
  const secret = "sk-ant-api03-very-secret-provider-key";
  printedToken(
    await ws.run(["keystore", "add", "apollo", "--upstream-key-stdin"], {
      stdin: `${secret}\n`,
      env: { KEYGATE_MASTER_KEY: keys },
    }),
  );
  const text = ws.read();
  t.false(text.includes(secret), "the upstream key never appears in clear");
  const sealed = readKeystoreFile(ws.keystore, LOAD).keystore.clients[1]?.upstreamKey ?? "";
  t.regex(sealed, /^enc:v1:k2:/, "the last kid listed is the newest");
  const masterKeys = parseMasterKeys(keys);
  t.like(decryptSecret(sealed, "apollo", masterKeys), { ok: true, value: secret });
  t.like(decryptSecret(sealed, "demo", masterKeys), { ok: false, why: "auth_failed" });
});

test("--upstream-key-env writes an env: reference", async (t) => {
  const ws = workspace(t);
  printedToken(await ws.run(["keystore", "init"]));
  printedToken(
    await ws.run(["keystore", "add", "apollo", "--upstream-key-env", "APOLLO_KEY"], {
      env: { APOLLO_KEY: "sk-ant-x" },
    }),
  );
  t.is(readKeystoreFile(ws.keystore, LOAD).keystore.clients[1]?.upstreamKey, "env:APOLLO_KEY");
});

const usageErrors: ReadonlyArray<[string, string[]]> = [
  ["no id", ["keystore", "add"]],
  ["an unknown flag", ["keystore", "add", "x", "--colour", "red"]],
  ["two ids", ["keystore", "add", "x", "y"]],
  [
    "both upstream key sources",
    ["keystore", "add", "x", "--upstream-key-stdin", "--upstream-key-env", "K"],
  ],
  [
    "an internal client with a key",
    ["keystore", "add", "x", "--internal", "--upstream-key-env", "K"],
  ],
  ["--kid without a stdin key", ["keystore", "add", "x", "--kid", "k1"]],
  ["a secret passed as a flag value", ["keystore", "add", "x", "--upstream-key", "sk-ant-x"]],
];
for (const [name, args] of usageErrors) {
  test(`add with ${name} is a usage error: exit 2 with the usage, file untouched`, async (t) => {
    const ws = workspace(t);
    printedToken(await ws.run(["keystore", "init"]));
    const before = ws.read();
    const result = await ws.run(args);
    t.is(result.code, 2);
    t.is(result.stdout, "");
    t.regex(result.stderr, /^keygate: .+\n\nusage: keygate/);
    t.is(ws.read(), before);
  });
}

const failures: ReadonlyArray<[string, string[], RegExp, Record<string, string>?]> = [
  ["an id that exists", ["keystore", "add", "demo"], /client "demo" already exists/],
  ["an invalid id", ["keystore", "add", "Lightning Prod"], /invalid client id "Lightning Prod"/],
  [
    "an expiry in the past",
    ["keystore", "add", "x", "--expires", "2001-01-01T00:00:00Z"],
    /--expires is not in the future/,
  ],
  [
    "an expiry without a zone",
    ["keystore", "add", "x", "--expires", "2030-01-01T00:00:00"],
    /RFC 3339/,
  ],
  ["a route that is not a path", ["keystore", "add", "x", "--routes", "v1"], /starting with \//],
  [
    "a bad variable name",
    ["keystore", "add", "x", "--upstream-key-env", "A-B"],
    /environment variable name/,
  ],
  [
    "a stdin key and no master key",
    ["keystore", "add", "x", "--upstream-key-stdin"],
    /no master key loaded/,
    { KEYGATE_MASTER_KEY: "" },
  ],
];
for (const [name, args, message, env] of failures) {
  test(`add with ${name} fails with one line, exit 1, file untouched`, async (t) => {
    const ws = workspace(t);
    printedToken(await ws.run(["keystore", "init"]));
    const before = ws.read();
    const result = await ws.run(args, { stdin: "sk-ant-secret\n", ...(env ? { env } : {}) });
    t.is(result.code, 1);
    t.is(result.stdout, "", "no token is printed when nothing was added");
    t.regex(result.stderr, /^keygate: [^\n]+\n$/);
    t.regex(result.stderr, message);
    t.is(ws.read(), before);
  });
}

test("add without a keystore says how to make one", async (t) => {
  const ws = workspace(t);
  const result = await ws.run(["keystore", "add", "x"]);
  t.is(result.code, 1);
  t.regex(result.stderr, /no keystore at .*keystore init/);
});

test("ten concurrent add processes all land and the file stays valid", async (t) => {
  const ws = workspace(t);
  printedToken(await ws.run(["keystore", "init"]));
  const ids = Array.from({ length: 10 }, (_, i) => `client-${i}`);
  const results = await Promise.all(ids.map((id) => ws.run(["keystore", "add", id])));
  const tokens = results.map(printedToken);
  const { keystore } = readKeystoreFile(ws.keystore, { ...LOAD, requireClients: true });
  t.deepEqual(keystore.clients.map((client) => client.id).sort(), ["demo", ...ids].sort());
  for (const [index, id] of ids.entries()) {
    const client = keystore.clients.find((candidate) => candidate.id === id);
    t.deepEqual(
      client?.tokens.map((token) => token.digest),
      [hashToken(tokens[index] ?? "")],
    );
  }
  t.deepEqual(readdirSync(ws.dir).sort(), ["keystore.yaml"], "no lock or temp file left behind");
});

test("comments, ordering and layout survive: an add appends the client and changes nothing else", async (t) => {
  const ws = workspace(t);
  printedToken(await ws.run(["keystore", "init"]));
  const starter = ws.read();
  const token = printedToken(await ws.run(["keystore", "add", "apollo", "--name", "Apollo"]));
  t.is(
    ws.read(),
    `${starter}  - id: apollo\n    name: Apollo\n    tokens:\n      - sha256: ${hashToken(token)}\n`,
  );
});

test("a hand-written file keeps its comments, order and indentation through several edits", async (t) => {
  const ws = workspace(t);
  const digest = (c: string) => c.repeat(64);
  ws.write(`# Production keystore — owned by the platform team.
version: 1

clients:
# zeta first on purpose: order is the operator's
- id: zeta   # legacy
  tokens:
  - sha256: ${digest("a")}
  routes: [ /v1/ ]
- id: alpha
  name: "Alpha: the first"
  tokens:
  - sha256: ${digest("b")}   # issued 2026-01
# end of clients
`);
  printedToken(await ws.run(["keystore", "add", "omega"]));
  t.like(await ws.run(["keystore", "disable", "alpha"]), { code: 0 });
  printedToken(await ws.run(["keystore", "rotate", "zeta", "--grace", "1h"]));
  const text = ws.read();
  for (const comment of [
    "# Production keystore — owned by the platform team.",
    "# zeta first on purpose: order is the operator's",
    "- id: zeta # legacy",
    `  - sha256: ${digest("b")} # issued 2026-01`,
    "# end of clients",
    "  routes: [ /v1/ ]",
    '  name: "Alpha: the first"',
  ]) {
    t.true(text.includes(comment), `kept: ${comment}\n---\n${text}`);
  }
  const ids = [...text.matchAll(/^- id: ([a-z]+)/gm)].map((match) => match[1]);
  t.deepEqual(
    ids,
    ["zeta", "alpha", "omega"],
    "new clients go last, in the file's own indentation",
  );
  t.true(text.indexOf("# end of clients") > text.indexOf("- id: omega"));
});

test("writes keystore.yaml with mode 0600, tightening a world-readable file", async (t) => {
  const ws = workspace(t);
  printedToken(await ws.run(["keystore", "init"]));
  t.is(statSync(ws.keystore).mode & 0o777, 0o600);
  printedToken(await ws.run(["keystore", "add", "a"]));
  t.is(statSync(ws.keystore).mode & 0o777, 0o600);

  chmodSync(ws.keystore, 0o644);
  const result = await ws.run(["keystore", "add", "b"]);
  printedToken(result);
  t.is(statSync(ws.keystore).mode & 0o777, 0o600);
  t.regex(result.stderr, /was mode 0644; written as 0600/);
});

test("a deliberately group-readable keystore (0640) stays group-readable", async (t) => {
  const ws = workspace(t);
  printedToken(await ws.run(["keystore", "init"]));
  chmodSync(ws.keystore, 0o640);
  printedToken(await ws.run(["keystore", "add", "a"]));
  t.is(statSync(ws.keystore).mode & 0o777, 0o640);
});
