import { createHash } from "node:crypto";
import { existsSync, readFileSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import test, { type ExecutionContext } from "ava";
import Database from "better-sqlite3";
import { encryptSecret } from "../../server/crypto/aes-gcm.js";
import { mintToken } from "../../server/crypto/token-format.js";
import { hashToken } from "../../server/crypto/token-hash.js";
import { parseKeystore } from "../../server/keystore/load.js";
import { KeystoreStore } from "../../server/keystore/store.js";
import type { Keystore, LoadedKeystore } from "../../server/keystore/types.js";
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
  t.deepEqual(store.listClients(NOW), []);
});

test("apply records the generation and makes it current", (t) => {
  const store = openStore(t);
  const generation = store.apply(FULL, NOW);
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

test("parsed allow-lists are cached per generation and frozen", (t) => {
  const store = openStore(t);
  store.apply(FULL, NOW);
  const first = store.lookup(hashToken("password"));
  const second = store.lookup(hashToken("lightning-second"));
  t.is(first?.routes, second?.routes);
  t.true(Object.isFrozen(first?.routes));
});

test("each apply is a new generation and the new one is served", (t) => {
  const store = openStore(t);
  t.is(store.apply(keystoreWith(["alpha", "beta"]), NOW).id, 1);
  // beta's token revoked: it must be gone from the new generation at once.
  t.is(store.apply(keystoreWith(["alpha"]), NOW).id, 2);
  t.is(store.current()?.id, 2);
  t.is(store.lookup(hashToken("alpha"))?.generation, 2);
  t.is(store.lookup(hashToken("beta")), undefined);
});

test("prune keeps at most the current and the previous generation", (t) => {
  const dbPath = tempDb(t);
  const store = openStore(t, dbPath);
  for (const name of ["one", "two", "three", "four"]) store.apply(keystoreWith([name]), NOW);
  // Rows carry the generations they are visible in, [since, until): only the versions
  // visible in generation 3 or 4 are left.
  const rows = inspect(dbPath, (db) => ({
    generations: db.prepare("SELECT id FROM generations ORDER BY id").pluck().all(),
    clients: db.prepare("SELECT id, since, until FROM clients ORDER BY since").raw().all(),
    tokens: db.prepare("SELECT client_id, since, until FROM tokens ORDER BY since").raw().all(),
  }));
  t.deepEqual(rows, {
    generations: [3, 4],
    clients: [
      ["three", 3, 4],
      ["four", 4, null],
    ],
    tokens: [
      ["three", 3, 4],
      ["four", 4, null],
    ],
  });
});

test("apply without pruning keeps every generation until prune() runs", (t) => {
  const dbPath = tempDb(t);
  const store = openStore(t, dbPath);
  for (const name of ["one", "two", "three"]) {
    store.apply(keystoreWith([name]), NOW, { prune: false });
  }
  const generations = () =>
    inspect(dbPath, (db) => db.prepare("SELECT id FROM generations ORDER BY id").pluck().all());
  t.deepEqual(generations(), [1, 2, 3]);
  t.is(store.lookup(hashToken("three"))?.generation, 3, "the newest is served before pruning");
  store.prune();
  t.deepEqual(generations(), [2, 3]);
  t.is(store.lookup(hashToken("three"))?.generation, 3);
});

test("generation ids keep growing after pruning", (t) => {
  const store = openStore(t);
  const ids = ["a", "b", "c"].map((name) => store.apply(keystoreWith([name]), NOW).id);
  t.deepEqual(ids, [1, 2, 3]);
});

test("after a restart the last generation on disk is served", (t) => {
  const dbPath = tempDb(t);
  const first = KeystoreStore.open(dbPath);
  first.apply(keystoreWith(["alpha", "beta"]), NOW);
  const last = first.apply(keystoreWith(["alpha"]), NOW);
  first.close();

  const reopened = openStore(t, dbPath);
  t.deepEqual(reopened.current(), last);
  t.is(reopened.lookup(hashToken("alpha"))?.clientId, "alpha");
  t.is(reopened.lookup(hashToken("beta")), undefined);
  t.is(reopened.apply(keystoreWith(["gamma"]), NOW).id, 3);
});

test("a failed apply changes nothing: the previous generation stays current", (t) => {
  const dbPath = tempDb(t);
  const store = openStore(t, dbPath);
  const good = store.apply(keystoreWith(["alpha"]), NOW);
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
  const usage = Object.fromEntries(
    store.listClients(NOW).map((c) => [c.id, { lastUsedAt: c.lastUsedAt, useCount: c.useCount }]),
  );
  t.deepEqual(usage, {
    "lightning-prod": { lastUsedAt: 2_000, useCount: 5 },
    "batch.jobs_2": { lastUsedAt: null, useCount: 0 },
    "health-checker": { lastUsedAt: null, useCount: 0 },
    fallback: { lastUsedAt: 1_000, useCount: 1 },
  });
});

test("usage survives new generations and restarts", (t) => {
  const dbPath = tempDb(t);
  const first = KeystoreStore.open(dbPath);
  first.apply(keystoreWith(["alpha"]), NOW);
  first.recordUsage([{ clientId: "alpha", lastUsedAt: 10, count: 1 }]);
  first.apply(keystoreWith(["alpha"], "edited"), NOW);
  first.close();
  const reopened = openStore(t, dbPath);
  t.like(reopened.listClients(NOW)[0], { id: "alpha", useCount: 1, lastUsedAt: 10 });
});

test("listClients summarises each client in keystore order, without secrets", (t) => {
  const store = openStore(t);
  store.apply(FULL, NOW);
  t.deepEqual(store.listClients(NOW), [
    {
      id: "lightning-prod",
      name: "Lightning production",
      kind: "client",
      disabled: false,
      tokenCount: 2,
      expiredTokenCount: 0,
      nextExpiry: Date.parse("2026-12-01T00:00:00Z"),
      upstreamKeyKind: "enc",
      lastUsedAt: null,
      useCount: 0,
    },
    {
      id: "batch.jobs_2",
      name: null,
      kind: "client",
      disabled: true,
      tokenCount: 1,
      expiredTokenCount: 0,
      nextExpiry: Date.parse("2027-01-01T10:30:00.500Z"),
      upstreamKeyKind: "env",
      lastUsedAt: null,
      useCount: 0,
    },
    {
      id: "health-checker",
      name: "Internal health checks",
      kind: "internal",
      disabled: false,
      tokenCount: 1,
      expiredTokenCount: 0,
      nextExpiry: null,
      upstreamKeyKind: "default",
      lastUsedAt: null,
      useCount: 0,
    },
    {
      id: "fallback",
      name: null,
      kind: "client",
      disabled: false,
      tokenCount: 1,
      expiredTokenCount: 0,
      nextExpiry: null,
      upstreamKeyKind: "default",
      lastUsedAt: null,
      useCount: 0,
    },
  ]);
});

test("listClients counts expired tokens apart from the next expiry", (t) => {
  const store = openStore(t);
  store.apply(FULL, NOW);
  const later = new Date("2026-12-15T00:00:00Z");
  t.like(store.listClients(later)[0], { tokenCount: 2, expiredTokenCount: 1, nextExpiry: null });
  t.is(store.listClients(later).length, 4);
});

test("upstreamKeyKind is none when there is neither an own key nor a default", (t) => {
  const store = openStore(t);
  store.apply(keystoreWith(["alpha"]), NOW);
  t.is(store.listClients(NOW)[0]?.upstreamKeyKind, "none");
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
  const applied = worker.apply(keystoreWith(["beta"]), NOW);
  worker.close();
  t.is(server.current()?.id, 1, "nothing changes until refresh");
  t.deepEqual(server.refresh(), applied);
  t.is(server.lookup(hashToken("alpha")), undefined);
  t.is(server.lookup(hashToken("beta"))?.generation, applied.id);
  t.deepEqual(server.refresh(), applied, "refresh with nothing new keeps the generation");
});

test("diff names added, removed and changed clients and token digest prefixes", (t) => {
  const store = openStore(t);
  const before = store.apply(FULL, NOW);
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
  const after = store.apply(edited, NOW);
  t.deepEqual(store.diff(before.id, after.id), {
    clientsAdded: ["newcomer"],
    clientsRemoved: ["fallback"],
    clientsChanged: ["batch.jobs_2"],
    tokensAdded: [hashToken("other-token").slice(0, 12)],
    tokensRevoked: [hashToken("fallback-token").slice(0, 12)],
  });
  const third = store.apply(revoked, NOW);
  t.deepEqual(store.diff(after.id, third.id), {
    clientsAdded: ["fallback"],
    clientsRemoved: ["newcomer"],
    clientsChanged: ["batch.jobs_2"],
    tokensAdded: [hashToken("fallback-token").slice(0, 12)],
    // Ordered by digest.
    tokensRevoked: [hashToken("other-token"), hashToken("lightning-second")].map((d) =>
      d.slice(0, 12),
    ),
  });
  t.deepEqual(store.diff(third.id, third.id), {
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
