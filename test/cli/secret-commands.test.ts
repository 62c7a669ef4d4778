/**
 * The commands around secrets and the CLI's own contract, through the real bin: `hash`
 * (pinned against Python's hashlib), `keygen`, `encrypt`, `keystore init` and `check`,
 * usage errors (exit 2) and help.
 */
import { spawnSync } from "node:child_process";
import test from "ava";
import { decryptSecret, parseMasterKeys } from "../../server/crypto/aes-gcm.js";
import { DEFAULTS_AAD } from "../../server/keystore/edit/keystore-editor.js";
import { printedToken, runKeygate, workspace } from "./run-keygate.js";

function pythonSha256(token: string): string {
  const python = spawnSync(
    "python3",
    [
      "-c",
      "import hashlib,sys; print(hashlib.sha256(sys.stdin.buffer.read().strip()).hexdigest())",
    ],
    { input: token, encoding: "utf8" },
  );
  if (python.status !== 0) throw new Error(`python3 failed: ${python.stderr}`);
  return python.stdout.trim();
}

test("hash prints the same digest as Python's hashlib, for minted and hand-made tokens", async (t) => {
  const ws = workspace(t);
  const minted = printedToken(await ws.run(["keystore", "init"]));
  for (const token of [minted, "password", "ünïcødé-tøkén", "sk-ant-api03-abc"]) {
    const result = await runKeygate(["hash"], { stdin: `${token}\n` });
    t.is(result.code, 0, result.stderr);
    t.is(result.stdout, `${pythonSha256(token)}\n`, token);
  }
  t.true(ws.read().includes(pythonSha256(minted)), "init stored exactly that digest");
});

test("hash with nothing on stdin fails with one line", async (t) => {
  const result = await runKeygate(["hash"], { stdin: "" });
  t.is(result.code, 1);
  t.is(result.stderr, "keygate: no token on stdin\n");
});

test("keygen prints kid:base64 of 32 bytes; --kid names it", async (t) => {
  const plain = await runKeygate(["keygen"]);
  t.regex(plain.stdout, /^k1:[A-Za-z0-9+/]{43}=\n$/);
  const named = await runKeygate(["keygen", "--kid", "2026-q4"]);
  t.is(parseMasterKeys(named.stdout.trim()).get("2026-q4")?.length, 32);
  const bad = await runKeygate(["keygen", "--kid", "no spaces"]);
  t.is(bad.code, 1);
});

test("encrypt seals stdin for one client id, or for the defaults", async (t) => {
  const ws = workspace(t);
  const keys = parseMasterKeys(ws.masterKey);
  const forClient = await ws.run(["encrypt", "--client", "apollo"], { stdin: "sk-ant-1\n" });
  t.is(forClient.code, 0, forClient.stderr);
  t.like(decryptSecret(forClient.stdout.trim(), "apollo", keys), { ok: true, value: "sk-ant-1" });
  t.like(decryptSecret(forClient.stdout.trim(), "other", keys), { ok: false });
  const forDefaults = await ws.run(["encrypt", "--defaults"], { stdin: "sk-ant-2" });
  t.like(decryptSecret(forDefaults.stdout.trim(), DEFAULTS_AAD, keys), {
    ok: true,
    value: "sk-ant-2",
  });
});

test("encrypt without a master key fails; without --client or --defaults it is a usage error", async (t) => {
  const noKey = await runKeygate(["encrypt", "--client", "a"], { stdin: "sk" });
  t.is(noKey.code, 1);
  t.regex(noKey.stderr, /^keygate: no master key loaded/);
  const usage = await runKeygate(["encrypt"], { stdin: "sk" });
  t.is(usage.code, 2);
});

test("keystore init writes a 0600 starter and refuses to overwrite it", async (t) => {
  const ws = workspace(t);
  printedToken(await ws.run(["keystore", "init"]));
  const before = ws.read();
  const again = await ws.run(["keystore", "init"]);
  t.is(again.code, 1);
  t.is(again.stdout, "");
  t.regex(again.stderr, /already exists; keygate never overwrites/);
  t.is(ws.read(), before);
});

test("keystore check: ok with a count, or file:line:column lines and exit 1", async (t) => {
  const ws = workspace(t);
  printedToken(await ws.run(["keystore", "init"]));
  const ok = await ws.run(["keystore", "check"]);
  t.is(ok.code, 0);
  t.regex(ok.stdout, /keystore\.yaml: ok, 1 clients\n$/);
  ws.write("version: 2\nclients: []\n");
  const bad = await ws.run(["keystore", "check"]);
  t.is(bad.code, 1);
  t.regex(bad.stdout, /keystore\.yaml:1:10: version: must be 1/);
});

test("--keystore overrides KEYGATE_KEYSTORE", async (t) => {
  const ws = workspace(t);
  const other = `${ws.dir}/other.yaml`;
  printedToken(await ws.run(["keystore", "init", "--keystore", other]));
  printedToken(await ws.run(["keystore", "add", "x", "--keystore", other]));
  t.regex((await ws.run(["keystore", "check", "--keystore", other])).stdout, /ok, 2 clients/);
  t.is((await ws.run(["keystore", "check"])).code, 1, "the default path was never written");
});

for (const [name, args] of [
  ["no command", []],
  ["an unknown command", ["frobnicate"]],
  ["an unknown keystore command", ["keystore", "frobnicate"]],
  ["keystore alone", ["keystore"]],
  ["an unknown flag", ["hash", "--salt", "x"]],
  ["a flag missing its value", ["keystore", "rotate", "x", "--grace"]],
] as const) {
  test(`${name} prints the usage and exits 2`, async (t) => {
    const result = await runKeygate([...args]);
    t.is(result.code, 2);
    t.is(result.stdout, "");
    t.regex(result.stderr, /^keygate: [^\n]+\n\nusage: keygate <command>/);
  });
}

test("help prints the usage on stdout and exits 0", async (t) => {
  const result = await runKeygate(["help"]);
  t.is(result.code, 0);
  t.regex(result.stdout, /keystore reencrypt --to KID/);
});
