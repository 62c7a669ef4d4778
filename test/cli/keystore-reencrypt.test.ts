/**
 * `keygate keystore reencrypt --to KID` through the real bin: master key rotation moves
 * every `enc:` value (clients' and the default's) to the new kid, or writes nothing.
 */
import test from "ava";
import { decryptSecret, generateMasterKey, parseMasterKeys } from "../../server/crypto/aes-gcm.js";
import { DEFAULTS_AAD } from "../../server/keystore/edit/keystore-editor.js";
import { readKeystoreFile } from "../../server/keystore/format/load.js";
import { printedToken, type Workspace, workspace } from "./run-keygate.js";

const SECRETS = { alpha: "sk-ant-alpha-key", beta: "sk-ant-beta-key" } as const;
const DEFAULT_SECRET = "sk-ant-shared-default";

/** alpha and beta with sealed keys, gamma with env:, a sealed default: all under k1. */
async function provisionUnderK1(ws: Workspace): Promise<void> {
  ws.write(`# master key rotation fixture
version: 1
clients:
  - id: seed   # keeps the file valid before the adds
    tokens:
      - sha256: ${"f".repeat(64)}
`);
  for (const [id, secret] of Object.entries(SECRETS)) {
    printedToken(await ws.run(["keystore", "add", id, "--upstream-key-stdin"], { stdin: secret }));
  }
  printedToken(await ws.run(["keystore", "add", "gamma", "--upstream-key-env", "GAMMA_KEY"]));
  const setDefault = await ws.run(["keystore", "set-upstream-key", "--defaults"], {
    stdin: DEFAULT_SECRET,
  });
  if (setDefault.code !== 0) throw new Error(setDefault.stderr);
}

function sealedValues(ws: Workspace): { defaults: string; clients: Record<string, string> } {
  const { keystore } = readKeystoreFile(ws.keystore, {
    masterKeys: new Map(),
    env: {},
    requireClients: false,
  });
  return {
    defaults: keystore.defaultUpstreamKey ?? "",
    clients: Object.fromEntries(keystore.clients.map((c) => [c.id, c.upstreamKey ?? ""])),
  };
}

test("reencrypt --to k2 moves every enc: value to k2; only k2 is needed afterwards", async (t) => {
  const ws = workspace(t);
  await provisionUnderK1(ws);
  const k2 = generateMasterKey("k2");
  const both = `${ws.masterKey},${k2}`;
  const result = await ws.run(["keystore", "reencrypt", "--to", "k2"], {
    env: { KEYGATE_MASTER_KEY: both },
  });
  t.is(result.code, 0, result.stderr);
  t.is(result.stdout, "");
  t.regex(result.stderr, /re-encrypted 3 upstream keys under master key "k2"/);

  const onlyK2 = parseMasterKeys(k2);
  const values = sealedValues(ws);
  for (const [id, secret] of Object.entries(SECRETS)) {
    t.regex(values.clients[id] ?? "", /^enc:v1:k2:/);
    t.like(decryptSecret(values.clients[id] ?? "", id, onlyK2), { ok: true, value: secret });
  }
  t.is(values.clients.gamma, "env:GAMMA_KEY", "env: references are left alone");
  t.like(decryptSecret(values.defaults, DEFAULTS_AAD, onlyK2), {
    ok: true,
    value: DEFAULT_SECRET,
  });
  t.true(ws.read().startsWith("# master key rotation fixture\n"));
  t.true(ws.read().includes("- id: seed # keeps the file valid before the adds"));
  for (const secret of [...Object.values(SECRETS), DEFAULT_SECRET])
    t.false(ws.read().includes(secret));

  // Running it again is a no-op.
  const before = ws.read();
  const again = await ws.run(["keystore", "reencrypt", "--to", "k2"], {
    env: { KEYGATE_MASTER_KEY: both },
  });
  t.is(again.code, 0);
  t.regex(again.stderr, /re-encrypted 0 upstream keys .*\(3 already under "k2"\)/);
  t.is(ws.read(), before);
});

test("reencrypt writes nothing when any value does not decrypt, and names it", async (t) => {
  const ws = workspace(t);
  await provisionUnderK1(ws);
  const before = ws.read();
  // k1 is not loaded: nothing under it can be opened.
  const k2 = generateMasterKey("k2");
  const result = await ws.run(["keystore", "reencrypt", "--to", "k2"], {
    env: { KEYGATE_MASTER_KEY: k2 },
  });
  t.is(result.code, 1);
  t.regex(result.stderr, /cannot re-encrypt: 3 upstream keys do not decrypt .*nothing was written/);
  t.regex(result.stderr, /client "alpha": master key "k1" is not loaded/);
  t.regex(result.stderr, /defaults: master key "k1" is not loaded/);
  t.is(ws.read(), before);

  // A k1 that is a different key: authentication fails, still nothing written.
  const wrongK1 = generateMasterKey("k1");
  const wrong = await ws.run(["keystore", "reencrypt", "--to", "k2"], {
    env: { KEYGATE_MASTER_KEY: `${wrongK1},${k2}` },
  });
  t.is(wrong.code, 1);
  t.regex(wrong.stderr, /does not decrypt with master key "k1"/);
  t.is(ws.read(), before);
});

test("reencrypt to a kid that is not loaded fails; without --to it is a usage error", async (t) => {
  const ws = workspace(t);
  await provisionUnderK1(ws);
  const missing = await ws.run(["keystore", "reencrypt", "--to", "k9"]);
  t.is(missing.code, 1);
  t.regex(missing.stderr, /master key "k9" is not loaded \(loaded: k1\)/);
  const usage = await ws.run(["keystore", "reencrypt"]);
  t.is(usage.code, 2);
  t.regex(usage.stderr, /needs --to <kid>/);
});
