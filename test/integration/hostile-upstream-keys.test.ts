/**
 * Upstream keys that must never leave keygate, against the real server over real gRPC:
 * a key that resolves to a control byte (Envoy's validate_mutations would turn every
 * request of that client into an empty 500) answers 503 KEY_UNAVAILABLE; a keystore that
 * names `env:KEYGATE_MASTER_KEY` is refused with a located error while the last good
 * generation keeps serving; and a generation that got into SQLite before these rules (an
 * upgrade) still never sends the master key.
 */
import { mkdirSync, mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import test from "ava";
import { encryptSecret, generateMasterKey, parseMasterKeys } from "../../server/crypto/aes-gcm.js";
import { hashToken } from "../../server/crypto/token-hash.js";
import type { KeystoreStatus } from "../../server/keystore/reload/keystore-manager.js";
import { KeystoreStore } from "../../server/keystore/store/store.js";
import { StartupError } from "../../server/main.js";
import { checkRequest } from "../helpers/check-request.js";
import { denialOf, setHeaders } from "../helpers/grpc-client.js";
import { startTestKeygate } from "../helpers/keygate-in-process.js";

const MASTER = generateMasterKey("k1");
const KEY = parseMasterKeys(MASTER).get("k1") as Buffer;
const MASTER_B64 = MASTER.slice("k1:".length);

// curl -H 'authorization: Bearer <token>' -d '{"model":"m"}' http://envoy/v1/messages
function bearer(token: string) {
  return checkRequest({ json: { model: "m" }, headers: { authorization: `Bearer ${token}` } });
}

function client(id: string, upstreamKey: string): string {
  return `  - id: ${id}\n    tokens: [{ sha256: ${hashToken(`token-${id}`)} }]\n    upstream_key: ${upstreamKey}\n`;
}

async function keystoreStatus(adminUrl: string): Promise<KeystoreStatus> {
  return (await (await fetch(`${adminUrl}/keystore`)).json()) as KeystoreStatus;
}

test("a client whose key resolves to a control byte answers 503 KEY_UNAVAILABLE; its neighbours are served", async (t) => {
  const kg = await startTestKeygate({
    keystore: `version: 1\nclients:\n${client("good", "env:GOOD_KEY")}${client("ctl-env", "env:CTL_KEY")}${client(
      "ctl-enc",
      encryptSecret("sk-ant-abc\x01def", "ctl-enc", "k1", KEY),
    )}${client("padded", "env:PADDED_KEY")}`,
    env: {
      KEYGATE_MASTER_KEY: MASTER,
      GOOD_KEY: "sk-ant-good",
      CTL_KEY: "sk-ant-abc\x01def",
      PADDED_KEY: "sk-ant-padded\n",
    },
  });
  try {
    t.deepEqual(setHeaders(await kg.client.check(bearer("token-good"))), {
      "x-api-key": "sk-ant-good",
      "x-client-id": "good",
    });
    for (const id of ["ctl-env", "ctl-enc", "padded"]) {
      const response = await kg.client.check(bearer(`token-${id}`));
      t.like(denialOf(response), { type: "KEY_UNAVAILABLE", status: 503 }, id);
      t.false(JSON.stringify(response).includes("sk-ant-"), `${id}: no key in the response`);
    }
    const status = await keystoreStatus(kg.adminUrl);
    t.is(status.warnings.length, 3, status.warnings.join("\n"));
    t.regex(
      status.warnings.join("\n"),
      /environment variable CTL_KEY holds a character an HTTP header cannot carry/,
    );
    t.regex(
      status.warnings.join("\n"),
      /decrypts to a key that holds a character an HTTP header cannot carry/,
    );
    t.false(JSON.stringify(status).includes("sk-ant-"));
  } finally {
    await kg.stop();
  }
});

test("env:KEYGATE_MASTER_KEY is refused with a located error; the last good generation keeps serving", async (t) => {
  const good = `version: 1\nclients:\n${client("apollo", "env:APOLLO_KEY")}`;
  const kg = await startTestKeygate({
    keystore: good,
    env: { KEYGATE_MASTER_KEY: MASTER, APOLLO_KEY: "sk-ant-apollo" },
  });
  try {
    const served = kg.running.keystore.generationId;
    writeFileSync(
      kg.keystorePath,
      `version: 1\nclients:\n${client("apollo", "env:KEYGATE_MASTER_KEY")}`,
    );
    const outcome = await kg.running.reload();
    t.is(outcome.result, "failed");
    const status = await keystoreStatus(kg.adminUrl);
    t.true(status.stale);
    t.deepEqual(status.lastError?.issues, [
      `${kg.keystorePath}:5:19: clients[0].upstream_key: env:KEYGATE_MASTER_KEY names one of keygate's own settings: KEYGATE_* variables (the master key among them) are never an upstream key`,
    ]);
    t.is(kg.running.keystore.generationId, served, "the generation is not replaced");
    t.deepEqual(setHeaders(await kg.client.check(bearer("token-apollo"))), {
      "x-api-key": "sk-ant-apollo",
      "x-client-id": "apollo",
    });
    t.false(
      kg.logs.some((line) => line.includes(MASTER_B64)),
      "the master key is never logged",
    );
  } finally {
    await kg.stop();
  }
});

test("with KEYGATE_UPSTREAM_ENV_PREFIX, a name outside it is refused at reload; one inside is served", async (t) => {
  const kg = await startTestKeygate({
    keystore: `version: 1\nclients:\n${client("apollo", "env:APOLLO_KEY")}`,
    env: { KEYGATE_UPSTREAM_ENV_PREFIX: "APOLLO_", APOLLO_KEY: "sk-ant-apollo", HOME_KEY: "x" },
  });
  try {
    writeFileSync(kg.keystorePath, `version: 1\nclients:\n${client("apollo", "env:HOME_KEY")}`);
    const outcome = await kg.running.reload();
    t.like(outcome, { result: "failed" });
    t.regex(
      (await keystoreStatus(kg.adminUrl)).lastError?.issues[0] ?? "",
      /:5:19: clients\[0\]\.upstream_key: env:HOME_KEY is outside KEYGATE_UPSTREAM_ENV_PREFIX: the variable's name must start with APOLLO_$/,
    );
    t.like(setHeaders(await kg.client.check(bearer("token-apollo"))), {
      "x-api-key": "sk-ant-apollo",
    });
  } finally {
    await kg.stop();
  }
});

test("a generation stored before the rules (an upgrade) never sends the master key: 503 KEY_UNAVAILABLE", async (t) => {
  const dir = mkdtempSync(path.join(tmpdir(), "keygate-it-"));
  const dbPath = path.join(dir, "data", "keystore.db");
  mkdirSync(path.dirname(dbPath), { recursive: true });
  // What an older keygate accepted and applied, written straight into SQLite.
  const store = KeystoreStore.open(dbPath);
  store.apply(
    {
      keystore: {
        version: 1,
        defaultUpstreamKey: null,
        clients: [
          {
            id: "legacy",
            name: null,
            kind: "client",
            disabled: false,
            tokens: [{ digest: hashToken("token-legacy"), expiresAt: null }],
            upstreamKey: "env:KEYGATE_MASTER_KEY",
            routes: null,
            models: null,
          },
        ],
      },
      sourceSha256: "0".repeat(64),
      warnings: [],
    },
    new Date(),
  );
  store.close();
  const kg = await startTestKeygate({
    dir,
    keystore: `version: 1\nclients:\n${client("legacy", "env:KEYGATE_MASTER_KEY")}`,
    env: { KEYGATE_MASTER_KEY: MASTER },
  });
  try {
    t.true(
      (await keystoreStatus(kg.adminUrl)).stale,
      "the file is refused; the stored generation serves",
    );
    const response = await kg.client.check(bearer("token-legacy"));
    t.like(denialOf(response), { type: "KEY_UNAVAILABLE", status: 503 });
    t.false(JSON.stringify(response).includes(MASTER_B64));
  } finally {
    await kg.stop();
  }
});

test("start-up with only a refused keystore fails with the located error", async (t) => {
  await t.throwsAsync(
    startTestKeygate({
      keystore: `version: 1\nclients:\n${client("apollo", "env:KEYGATE_MASTER_KEY")}`,
      env: { KEYGATE_MASTER_KEY: MASTER },
    }),
    {
      instanceOf: StartupError,
      message:
        /keystore\.yaml:5:19: clients\[0\]\.upstream_key: env:KEYGATE_MASTER_KEY names one of keygate's own settings/,
    },
  );
});

test("a provider key pasted as a field name is never on /keystore or in the log", async (t) => {
  const pasted = `sk-ant-api03-${"Qw7".repeat(30)}AA`;
  const kg = await startTestKeygate({
    keystore: `version: 1\nclients:\n${client("apollo", "env:APOLLO_KEY")}`,
    env: { APOLLO_KEY: "sk-ant-apollo" },
  });
  try {
    writeFileSync(
      kg.keystorePath,
      `version: 1\nclients:\n${client("apollo", "env:APOLLO_KEY")}    ${pasted}: x\n`,
    );
    t.is((await kg.running.reload()).result, "failed");
    const status = await keystoreStatus(kg.adminUrl);
    t.deepEqual(status.lastError?.issues, [
      `${kg.keystorePath}:6:5: clients[0][<redacted>]: unknown field (allowed: id, name, tokens, upstream_key, routes, models, disabled, kind, budget)`,
    ]);
    t.false(
      kg.logs.some((line) => line.includes("sk-ant-api03")),
      "not in the log",
    );
  } finally {
    await kg.stop();
  }
});
