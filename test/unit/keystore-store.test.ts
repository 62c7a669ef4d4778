import { createHash } from "node:crypto";
import { existsSync, readFileSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import test, { type ExecutionContext } from "ava";
import Database from "better-sqlite3";
import { encryptSecret } from "../../server/crypto/aes-gcm.js";
import { mintToken } from "../../server/crypto/token-format.js";
import { hashToken } from "../../server/crypto/token-hash.js";
import { parseKeystore } from "../../server/keystore/format/load.js";
import type { Keystore, LoadedKeystore } from "../../server/keystore/format/model.js";
import { GENERATIONS_KEPT } from "../../server/keystore/store/schema.js";
import { KeystoreStore } from "../../server/keystore/store/store.js";
import { inspect, openStore as openStoreAt, tempDb as tempDbIn } from "../helpers/store-db.js";

const FULL_FIXTURE = fileURLToPath(
  new URL("../fixtures/keystores/valid-full.yaml", import.meta.url),
);
const K1 = createHash("sha256").update("keygate test master key k1").digest();
const NOW = new Date("2026-06-01T00:00:00Z");

function loadText(text: string): LoadedKeystore {
  return parseKeystore(text, {
    file: "keystore.yaml",
    masterKeys: new Map([["k1", K1]]),
    env: {},
    requireClients: false,
  });
}

const FULL = loadText(readFileSync(FULL_FIXTURE, "utf8"));

/** A loaded keystore with one client per token, each client named after its token. */
function keystoreWith(tokens: readonly string[], sha = tokens.join(",")): LoadedKeystore {
  const keystore: Keystore = {
    version: 1,
    defaultUpstreamKey: null,
    clients: tokens.map((token) => ({
      id: token,
      name: null,
      kind: "client",
      disabled: false,
      tokens: [{ digest: hashToken(token), expiresAt: null }],
      upstreamKey: null,
      routes: null,
      models: null,
    })),
  };
  return { keystore, sourceSha256: createHash("sha256").update(sha).digest("hex"), warnings: [] };
}

/** In nested directories, which open() must create. */
const tempDb = (t: ExecutionContext) => tempDbIn(t, path.join("data", "nested"));
const openStore = (t: ExecutionContext, dbPath = tempDb(t)) => openStoreAt(t, dbPath);

test("open creates the directory and a database in WAL mode", (t) => {
  const dbPath = tempDb(t);
  openStore(t, dbPath);
  t.true(existsSync(dbPath));
  t.is(
    inspect(dbPath, (db) => db.pragma("journal_mode", { simple: true })),
    "wal",
  );
});

test("a fresh store has no generation and finds nothing", (t) => {
  const store = openStore(t);
  t.is(store.current(), undefined);
  t.is(store.lookup(hashToken("password")), undefined);
  t.deepEqual(store.listClients(), []);
});

test("apply records the generation and makes it current", (t) => {
  const store = openStore(t);
  const { generation } = store.apply(FULL, NOW);
  t.deepEqual(generation, {
    id: 1,
    sourceSha256: FULL.sourceSha256,
    loadedAt: "2026-06-01T00:00:00.000Z",
    clientCount: 4,
    defaultUpstreamKey: "env:ANTHROPIC_API_KEY",
  });
  t.deepEqual(store.current(), generation);
});

test("lookup finds a known token's client, with routes and models round-tripped", (t) => {
  const store = openStore(t);
  store.apply(FULL, NOW);
  t.deepEqual(store.lookup(hashToken("password")), {
    generation: 1,
    clientId: "lightning-prod",
    kind: "client",
    disabled: false,
    expiresAt: Date.parse("2026-12-01T00:00:00Z"),
    upstreamKey: "enc:v1:k1:6RAKzK9viGyfbK9jOjEPwzqBz0Gi1brDLTHqe7qFG5RHyh3xUIkMz586AbRZLOx15Q==",
    upstreamKeyIsDefault: false,
    routes: ["/services/", "/v1/messages"],
    models: ["claude-sonnet-*", "claude-haiku-4"],
  });
});

test("lookup of an unknown digest is undefined", (t) => {
  const store = openStore(t);
  store.apply(FULL, NOW);
  t.is(store.lookup(hashToken("not a known token")), undefined);
});

test("a client without its own upstream key gets the generation's default", (t) => {
  const store = openStore(t);
  store.apply(FULL, NOW);
  t.is(store.lookup(hashToken("fallback-token"))?.upstreamKey, "env:ANTHROPIC_API_KEY");
  t.true(store.lookup(hashToken("fallback-token"))?.upstreamKeyIsDefault);
  t.is(store.lookup(hashToken("batch-token"))?.upstreamKey, "env:BATCH_KEY");
  t.false(store.lookup(hashToken("batch-token"))?.upstreamKeyIsDefault);
});

test("no own key and no default is null", (t) => {
  const store = openStore(t);
  store.apply(keystoreWith(["alpha"]), NOW);
  t.is(store.lookup(hashToken("alpha"))?.upstreamKey, null);
});

test("disabled, internal and absent allow-lists come back as stored", (t) => {
  const store = openStore(t);
  store.apply(FULL, NOW);
  const batch = store.lookup(hashToken("batch-token"));
  t.true(batch?.disabled);
  t.is(batch?.routes, null);
  t.is(batch?.models, null);
  t.is(store.lookup(hashToken("health-token"))?.kind, "internal");
});

test("a match and its allow-lists are frozen", (t) => {
  const store = openStore(t);
  store.apply(FULL, NOW);
  const match = store.lookup(hashToken("password"));
  t.true(Object.isFrozen(match));
  t.true(Object.isFrozen(match?.routes));
  t.true(Object.isFrozen(match?.models));
});

test("each apply is a new generation and the new one is served", (t) => {
  const store = openStore(t);
  t.is(store.apply(keystoreWith(["alpha", "beta"]), NOW).generation.id, 1);
  // beta's token revoked: it must be gone from the new generation at once.
  t.is(store.apply(keystoreWith(["alpha"]), NOW).generation.id, 2);
  t.is(store.current()?.id, 2);
  t.is(store.lookup(hashToken("alpha"))?.generation, 2);
  t.is(store.lookup(hashToken("beta")), undefined);
});

test("the database holds the current state and a log of every generation", (t) => {
  const dbPath = tempDb(t);
  const store = openStore(t, dbPath);
  const ids = ["one", "two", "three", "four"].map(
    (name) => store.apply(keystoreWith([name]), NOW).generation.id,
  );
  t.deepEqual(ids, [1, 2, 3, 4]);
  const rows = inspect(dbPath, (db) => ({
    generations: db.prepare("SELECT id, client_count FROM generations ORDER BY id").raw().all(),
    clients: db.prepare("SELECT id, record FROM clients").raw().all(),
    tokens: db.prepare("SELECT digest, client_id, expires_at FROM tokens").raw().all(),
  }));
  t.deepEqual(rows, {
    generations: [
      [1, 1],
      [2, 1],
      [3, 1],
      [4, 1],
    ],
    clients: [
      [
        "four",
        '{"name":null,"kind":"client","disabled":false,"upstreamKey":null,"routes":null,"models":null}',
      ],
    ],
    tokens: [[hashToken("four"), "four", null]],
  });
});

test("the generations log keeps the newest GENERATIONS_KEPT rows, and ids are never reused", (t) => {
  const dbPath = tempDb(t);
  const first = KeystoreStore.open(dbPath);
  const extra = 3;
  let last = 0;
  for (let reload = 0; reload < GENERATIONS_KEPT + extra; reload++) {
    last = first.apply(keystoreWith(["alpha", `client-${reload % 2}`]), NOW).generation.id;
  }
  first.close();
  const logged = () =>
    inspect(dbPath, (db) =>
      db.prepare("SELECT count(*), min(id), max(id) FROM generations").raw().get(),
    );
  t.deepEqual(logged(), [GENERATIONS_KEPT, extra + 1, GENERATIONS_KEPT + extra]);

  const reopened = openStore(t, dbPath);
  t.is(reopened.current()?.id, last);
  t.is(reopened.lookup(hashToken("alpha"))?.generation, last);
  t.is(reopened.apply(keystoreWith(["alpha"]), NOW).generation.id, last + 1);
  t.deepEqual(logged(), [GENERATIONS_KEPT, extra + 2, last + 1]);
});

test("after a restart the last generation on disk is served", (t) => {
  const dbPath = tempDb(t);
  const first = KeystoreStore.open(dbPath);
  first.apply(keystoreWith(["alpha", "beta"]), NOW);
  const last = first.apply(keystoreWith(["alpha"]), NOW).generation;
  first.close();

  const reopened = openStore(t, dbPath);
  t.deepEqual(reopened.current(), last);
  t.is(reopened.lookup(hashToken("alpha"))?.clientId, "alpha");
  t.is(reopened.lookup(hashToken("beta")), undefined);
  t.is(reopened.apply(keystoreWith(["gamma"]), NOW).generation.id, 3);
});

test("a failed apply changes nothing: the previous generation stays current", (t) => {
  const dbPath = tempDb(t);
  const store = openStore(t, dbPath);
  const good = store.apply(keystoreWith(["alpha"]), NOW).generation;
  // Two clients with one id cannot be stored; the loader never produces this, SQLite refuses it.
  const broken = keystoreWith(["beta"]);
  const duplicate = {
    ...broken,
    keystore: {
      ...broken.keystore,
      clients: [...broken.keystore.clients, ...broken.keystore.clients],
    },
  };
  // better-sqlite3's SqliteError inherits from Error but is not a native error, hence `any`.
  t.throws(() => store.apply(duplicate, NOW), { any: true, code: "SQLITE_CONSTRAINT_PRIMARYKEY" });
  t.deepEqual(store.current(), good);
  t.is(store.lookup(hashToken("alpha"))?.generation, good.id);
  t.deepEqual(
    inspect(dbPath, (db) => db.prepare("SELECT id FROM generations").pluck().all()),
    [good.id],
  );
});

test("apply refuses anything that is not a digest or a key reference", (t) => {
  const store = openStore(t);
  const base = keystoreWith(["alpha"]);
  const [client] = base.keystore.clients;
  if (client === undefined) throw new Error("fixture");
  const withClient = (patch: object): LoadedKeystore => ({
    ...base,
    keystore: { ...base.keystore, clients: [{ ...client, ...patch }] },
  });
  const clearKey = t.throws(() => store.apply(withClient({ upstreamKey: "sk-ant-in-clear" }), NOW));
  t.false(clearKey?.message.includes("sk-ant-in-clear"));
  t.throws(
    () => store.apply(withClient({ tokens: [{ digest: "a-raw-token", expiresAt: null }] }), NOW),
    {
      message: /not a lowercase SHA-256 digest/,
    },
  );
  t.is(store.current(), undefined);
});

test("no token or upstream key is ever written in clear", (t) => {
  const dbPath = tempDb(t);
  const token = mintToken();
  const upstreamSecret = "sk-ant-secret-upstream-key";
  const loaded = loadText(`version: 1
clients:
  - id: leak-check
    tokens: [{ sha256: ${hashToken(token)} }]
    upstream_key: ${encryptSecret(upstreamSecret, "leak-check", "k1", K1)}
`);
  const store = KeystoreStore.open(dbPath);
  store.apply(loaded, NOW);
  store.recordUsage([{ clientId: "leak-check", lastUsedAt: NOW.getTime(), count: 1 }]);
  store.close();
  const bytes = [dbPath, `${dbPath}-wal`]
    .filter((file) => existsSync(file))
    .map((file) => readFileSync(file).toString("latin1"))
    .join("");
  t.true(bytes.includes(hashToken(token)), "the digest is stored");
  t.false(bytes.includes(token), "the token is not");
  t.false(bytes.includes(upstreamSecret), "the upstream key is not");
});

test("recordUsage accumulates counts and keeps the latest use", (t) => {
  const store = openStore(t);
  store.apply(FULL, NOW);
  store.recordUsage([
    { clientId: "lightning-prod", lastUsedAt: 2_000, count: 3 },
    { clientId: "fallback", lastUsedAt: 1_000, count: 1 },
  ]);
  // An older batch arriving late adds its count but does not move last use back.
  store.recordUsage([{ clientId: "lightning-prod", lastUsedAt: 1_500, count: 2 }]);
  store.recordUsage([]);
  // By id, every stored client, used or not.
  t.deepEqual(store.listClients(), [
    { id: "batch.jobs_2", lastUsedAt: null, useCount: 0 },
    { id: "fallback", lastUsedAt: 1_000, useCount: 1 },
    { id: "health-checker", lastUsedAt: null, useCount: 0 },
    { id: "lightning-prod", lastUsedAt: 2_000, useCount: 5 },
  ]);
});

test("usage survives new generations and restarts", (t) => {
  const dbPath = tempDb(t);
  const first = KeystoreStore.open(dbPath);
  first.apply(keystoreWith(["alpha"]), NOW);
  first.recordUsage([{ clientId: "alpha", lastUsedAt: 10, count: 1 }]);
  first.apply(keystoreWith(["alpha"], "edited"), NOW);
  first.close();
  const reopened = openStore(t, dbPath);
  t.deepEqual(reopened.listClients(), [{ id: "alpha", useCount: 1, lastUsedAt: 10 }]);
});

test("a database written by a newer keygate is refused", (t) => {
  const dbPath = tempDb(t);
  KeystoreStore.open(dbPath).close();
  const db = new Database(dbPath);
  db.pragma("user_version = 99");
  db.close();
  t.throws(() => KeystoreStore.open(dbPath), { message: /schema version 99 is newer/ });
});

test("refresh switches to a generation another connection applied", (t) => {
  const dbPath = tempDb(t);
  const server = openStore(t, dbPath);
  server.apply(keystoreWith(["alpha"]), NOW);
  server.lookup(hashToken("alpha"));
  // The reload worker applies through its own connection.
  const worker = KeystoreStore.open(dbPath);
  const applied = worker.apply(keystoreWith(["beta"]), NOW).generation;
  worker.close();
  t.is(server.current()?.id, 1, "nothing changes until refresh");
  t.deepEqual(server.refresh(), applied);
  t.is(server.lookup(hashToken("alpha")), undefined);
  t.is(server.lookup(hashToken("beta"))?.generation, applied.id);
  t.deepEqual(server.refresh(), applied, "refresh with nothing new keeps the generation");
});

test("apply reports added, removed and changed clients and token digest prefixes", (t) => {
  const store = openStore(t);
  const first = store.apply(FULL, NOW);
  t.deepEqual(first.changes, {
    clientsAdded: ["lightning-prod", "batch.jobs_2", "health-checker", "fallback"],
    clientsRemoved: [],
    clientsChanged: [],
    tokensAdded: ["password", "lightning-second", "batch-token", "health-token", "fallback-token"]
      .map(hashToken)
      .map((digest) => digest.slice(0, 12)),
    tokensRevoked: [],
  });
  const edited = loadText(
    readFileSync(FULL_FIXTURE, "utf8")
      .replace("disabled: true", "disabled: false")
      .replace(/ {2}- id: fallback\n.*\n/, "")
      .replace(
        "clients:\n",
        `clients:\n  - id: newcomer\n    tokens: [{ sha256: ${hashToken("other-token")} }]\n`,
      )
      .replace("- sha256: d0ab1cea", "- sha256: D0AB1CEA"),
  );
  const revoked = loadText(
    readFileSync(FULL_FIXTURE, "utf8").replace(
      /\n {6}- sha256: d0ab1cea494423ce7fa6cb3cacf7d88d5ae342a923991ecfb69028923b0837af/,
      "",
    ),
  );
  t.deepEqual(store.apply(edited, NOW).changes, {
    clientsAdded: ["newcomer"],
    clientsRemoved: ["fallback"],
    clientsChanged: ["batch.jobs_2"],
    tokensAdded: [hashToken("other-token").slice(0, 12)],
    tokensRevoked: [hashToken("fallback-token").slice(0, 12)],
  });
  t.deepEqual(store.apply(revoked, NOW).changes, {
    clientsAdded: ["fallback"],
    clientsRemoved: ["newcomer"],
    clientsChanged: ["batch.jobs_2"],
    tokensAdded: [hashToken("fallback-token").slice(0, 12)],
    // Ordered by digest.
    tokensRevoked: [hashToken("other-token"), hashToken("lightning-second")]
      .sort()
      .map((d) => d.slice(0, 12)),
  });
  t.deepEqual(store.apply(revoked, NOW).changes, {
    clientsAdded: [],
    clientsRemoved: [],
    clientsChanged: [],
    tokensAdded: [],
    tokensRevoked: [],
  });
});

test("cached lookups never outlive their generation, whether applied here or by another connection", (t) => {
  const dbPath = tempDb(t);
  const store = openStore(t, dbPath);
  store.apply(keystoreWith(["kept", "revoked"]), NOW);
  const first = store.lookup(hashToken("revoked"));
  t.truthy(first);
  t.is(store.lookup(hashToken("revoked")), first, "a second lookup is served from the cache");

  store.apply(keystoreWith(["kept"]), NOW);
  t.is(store.lookup(hashToken("revoked")), undefined, "revoked by apply");

  const worker = openStore(t, dbPath);
  store.apply(keystoreWith(["kept", "again"]), NOW);
  t.truthy(store.lookup(hashToken("again")));
  worker.apply(keystoreWith(["kept"]), NOW);
  t.truthy(store.lookup(hashToken("again")), "still the generation this connection serves");
  store.refresh();
  t.is(
    store.lookup(hashToken("again")),
    undefined,
    "revoked once refreshed to the other connection's generation",
  );
});

test("a lookup reads what another connection committed, cached only once refreshed", (t) => {
  const dbPath = tempDb(t);
  const server = openStore(t, dbPath);
  server.apply(keystoreWith(["alpha"]), NOW);
  const worker = openStore(t, dbPath);
  const applied = worker.apply(keystoreWith(["alpha", "beta"]), NOW).generation;
  // One statement reads the token, its client and the generation it belongs to.
  const early = server.lookup(hashToken("beta"));
  t.like(early, { generation: applied.id, clientId: "beta" });
  t.not(server.lookup(hashToken("beta")), early, "not cached under the generation served");
  server.refresh();
  const late = server.lookup(hashToken("beta"));
  t.is(server.lookup(hashToken("beta")), late, "cached once refreshed");
});
