/**
 * KeystoreStore writes each generation as the rows that changed against the newest one
 * (rows carry the generations they are visible in, [since, until)). These tests check
 * what is written on disk, that every generation still stored answers as if it had been
 * written in full, and that a database written by the v1 schema opens and serves on.
 */
import { deepStrictEqual } from "node:assert/strict";
import { createHash } from "node:crypto";
import { mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import test from "ava";
import Database from "better-sqlite3";
import fc from "fast-check";
import { digestPrefix, hashToken } from "../../server/crypto/token-hash.js";
import { type KeystoreChanges, KeystoreStore } from "../../server/keystore/store.js";
import type {
  ClientKind,
  Keystore,
  KeystoreClient,
  LoadedKeystore,
  TokenMatch,
} from "../../server/keystore/types.js";
import { inspect, openStore, tempDb } from "../helpers/store-db.js";

const NOW = new Date("2026-06-01T00:00:00Z");
const NO_CHANGES: KeystoreChanges = {
  clientsAdded: [],
  clientsRemoved: [],
  clientsChanged: [],
  tokensAdded: [],
  tokensRevoked: [],
};

function rowsTouchedBy(dbPath: string, id: number) {
  return inspect(dbPath, (db) => {
    const count = (sql: string) => db.prepare(sql).pluck().get(id);
    return {
      clientsWritten: count("SELECT count(*) FROM clients WHERE since = ?"),
      clientsRetired: count("SELECT count(*) FROM clients WHERE until = ?"),
      tokensWritten: count("SELECT count(*) FROM tokens WHERE since = ?"),
      tokensRetired: count("SELECT count(*) FROM tokens WHERE until = ?"),
    };
  });
}

function client(
  id: string,
  tokens: readonly string[],
  patch: Partial<Omit<KeystoreClient, "id" | "tokens">> = {},
): KeystoreClient {
  return {
    id,
    name: null,
    kind: "client",
    disabled: false,
    tokens: tokens.map((token) => ({ digest: hashToken(token), expiresAt: null })),
    upstreamKey: null,
    routes: null,
    models: null,
    ...patch,
  };
}

function loaded(clients: readonly KeystoreClient[], defaultUpstreamKey: string | null = null) {
  const keystore: Keystore = { version: 1, defaultUpstreamKey, clients };
  const sourceSha256 = createHash("sha256").update(JSON.stringify(keystore)).digest("hex");
  return { keystore, sourceSha256, warnings: [] } satisfies LoadedKeystore;
}

/** `count` clients `client-0000`… holding `token-0000`…, one each. */
function manyClients(count: number): KeystoreClient[] {
  return Array.from({ length: count }, (_, index) => {
    const suffix = String(index).padStart(4, "0");
    return client(`client-${suffix}`, [`token-${suffix}`]);
  });
}

function replaceAt<T>(items: readonly T[], index: number, item: T): T[] {
  return items.map((current, at) => (at === index ? item : current));
}

test("a one-client edit at 2 000 clients writes only that client's rows", (t) => {
  const dbPath = tempDb(t);
  const store = openStore(t, dbPath);
  const before = manyClients(2000);
  const first = store.apply(loaded(before), NOW, { prune: false });
  t.like(rowsTouchedBy(dbPath, first.id), { clientsWritten: 2000, tokensWritten: 2000 });

  // Disable client-0700 and rotate its token: one client version, one token in, one out.
  const edited = replaceAt(
    before,
    700,
    client("client-0700", ["rotated"], { disabled: true, name: "rotated" }),
  );
  const second = store.apply(loaded(edited), NOW, { prune: false });
  t.deepEqual(rowsTouchedBy(dbPath, second.id), {
    clientsWritten: 1,
    clientsRetired: 1,
    tokensWritten: 1,
    tokensRetired: 1,
  });
  t.like(store.lookup(hashToken("rotated")), {
    generation: second.id,
    clientId: "client-0700",
    disabled: true,
  });
  t.is(store.lookup(hashToken("token-0700")), undefined, "the old token is revoked at once");
  t.like(store.lookup(hashToken("token-0701")), { generation: second.id, clientId: "client-0701" });
  t.is(store.listClients(NOW)[700]?.name, "rotated");

  // A third edit while the first is still stored: every pair still diffs as written in full.
  const third = store.apply(loaded(edited.slice(0, 1999)), NOW, { prune: false });
  t.deepEqual(rowsTouchedBy(dbPath, third.id), {
    clientsWritten: 0,
    clientsRetired: 1,
    tokensWritten: 0,
    tokensRetired: 1,
  });
  t.deepEqual(store.diff(first.id, second.id), {
    ...NO_CHANGES,
    clientsChanged: ["client-0700"],
    tokensAdded: [digestPrefix(hashToken("rotated"))],
    tokensRevoked: [digestPrefix(hashToken("token-0700"))],
  });
  t.deepEqual(store.diff(second.id, third.id), {
    ...NO_CHANGES,
    clientsRemoved: ["client-1999"],
    tokensRevoked: [digestPrefix(hashToken("token-1999"))],
  });
  t.deepEqual(store.diff(third.id, first.id), {
    clientsAdded: ["client-1999"],
    clientsRemoved: [],
    clientsChanged: ["client-0700"],
    tokensAdded: [hashToken("token-0700"), hashToken("token-1999")].sort().map(digestPrefix),
    tokensRevoked: [digestPrefix(hashToken("rotated"))],
  });

  store.prune();
  t.is(store.diff(first.id, third.id).clientsAdded.length, 1999, "a pruned generation is empty");
  t.like(store.lookup(hashToken("token-0000")), { generation: third.id });
});

test("a digest revoked from one client and re-added to another answers from each generation", (t) => {
  const dbPath = tempDb(t);
  const writer = openStore(t, dbPath);
  const g1 = writer.apply(loaded([client("a", ["shared"]), client("b", [])]), NOW, {
    prune: false,
  });
  // A reader that stays on generation 1 while the writer moves on, as the main thread
  // does until it refreshes.
  const reader = openStore(t, dbPath);
  const g2 = writer.apply(loaded([client("a", []), client("b", [])]), NOW, { prune: false });
  t.is(writer.lookup(hashToken("shared")), undefined);
  const g3 = writer.apply(loaded([client("a", []), client("b", ["shared"])]), NOW, {
    prune: false,
  });
  t.like(writer.lookup(hashToken("shared")), { generation: g3.id, clientId: "b" });
  t.like(reader.lookup(hashToken("shared")), { generation: g1.id, clientId: "a" });

  // Moved back in one step: the token is versioned, not left on the wrong client.
  const g4 = writer.apply(loaded([client("a", ["shared"]), client("b", [])]), NOW, {
    prune: false,
  });
  t.like(rowsTouchedBy(dbPath, g4.id), { tokensWritten: 1, tokensRetired: 1 });
  t.like(writer.lookup(hashToken("shared")), { generation: g4.id, clientId: "a" });

  const prefix = digestPrefix(hashToken("shared"));
  t.deepEqual(writer.diff(g1.id, g2.id), { ...NO_CHANGES, tokensRevoked: [prefix] });
  t.deepEqual(writer.diff(g2.id, g3.id), { ...NO_CHANGES, tokensAdded: [prefix] });
  // Digest-level, as before: a token that moved between clients is neither added nor revoked.
  t.deepEqual(writer.diff(g1.id, g3.id), NO_CHANGES);
  t.deepEqual(writer.diff(g3.id, g4.id), NO_CHANGES);
});

test("a client whose position alone changes is moved in place, not versioned", (t) => {
  const dbPath = tempDb(t);
  const store = openStore(t, dbPath);
  const [a, b, c] = [client("a", ["ta"]), client("b", ["tb"]), client("c", ["tc"])];
  const first = store.apply(loaded([a, b, c]), NOW);
  const second = store.apply(loaded([c, a, b]), NOW);
  t.deepEqual(rowsTouchedBy(dbPath, second.id), {
    clientsWritten: 0,
    clientsRetired: 0,
    tokensWritten: 0,
    tokensRetired: 0,
  });
  t.deepEqual(
    store.listClients(NOW).map((summary) => summary.id),
    ["c", "a", "b"],
  );
  t.deepEqual(store.diff(first.id, second.id), NO_CHANGES);
  // Removing one from the middle moves nobody: positions need only increase down the list.
  const third = store.apply(loaded([c, b]), NOW);
  t.deepEqual(
    inspect(dbPath, (db) =>
      db.prepare("SELECT id, position FROM clients WHERE until IS NULL ORDER BY position").all(),
    ),
    [
      { id: "c", position: 2 },
      { id: "b", position: 4 },
    ],
  );
  t.deepEqual(store.diff(second.id, third.id), {
    ...NO_CHANGES,
    clientsRemoved: ["a"],
    tokensRevoked: [digestPrefix(hashToken("ta"))],
  });
});

test("a client can lose every token and keep its row", (t) => {
  const dbPath = tempDb(t);
  const store = openStore(t, dbPath);
  const first = store.apply(loaded([client("a", ["one", "two"])]), NOW);
  const second = store.apply(loaded([client("a", [])]), NOW);
  t.deepEqual(rowsTouchedBy(dbPath, second.id), {
    clientsWritten: 0,
    clientsRetired: 0,
    tokensWritten: 0,
    tokensRetired: 2,
  });
  t.is(store.lookup(hashToken("one")), undefined);
  t.like(store.listClients(NOW), [{ id: "a", tokenCount: 0, nextExpiry: null }]);
  t.deepEqual(store.diff(first.id, second.id), {
    ...NO_CHANGES,
    tokensRevoked: [hashToken("one"), hashToken("two")].sort().map(digestPrefix),
  });
});

test("applying the same content twice writes only the generation", (t) => {
  const dbPath = tempDb(t);
  const store = openStore(t, dbPath);
  const content = loaded([client("a", ["ta"], { routes: ["/v1/"] }), client("b", ["tb"])]);
  const first = store.apply(content, NOW);
  const second = store.apply(content, NOW);
  t.is(second.id, first.id + 1);
  t.deepEqual(rowsTouchedBy(dbPath, second.id), {
    clientsWritten: 0,
    clientsRetired: 0,
    tokensWritten: 0,
    tokensRetired: 0,
  });
  t.like(store.lookup(hashToken("ta")), { generation: second.id, routes: ["/v1/"] });
  t.deepEqual(store.diff(first.id, second.id), NO_CHANGES);
});

test("a connection still on a pruned generation finds nothing in it, as before", (t) => {
  const dbPath = tempDb(t);
  const writer = openStore(t, dbPath);
  writer.apply(loaded([client("a", ["ta"]), client("b", ["tb"])]), NOW);
  const reader = openStore(t, dbPath);
  writer.apply(loaded([client("a", ["ta"])]), NOW);
  const newest = writer.apply(loaded([client("a", ["ta"]), client("c", ["tc"])]), NOW);
  // Client a's rows are still stored (visible in every generation), but its generation is gone.
  t.is(reader.lookup(hashToken("ta")), undefined);
  t.deepEqual(reader.listClients(NOW), []);
  reader.refresh();
  t.like(reader.lookup(hashToken("ta")), { generation: newest.id });
});

test("apply after another connection applied diffs against the disk, not its own snapshot", (t) => {
  const dbPath = tempDb(t);
  const server = openStore(t, dbPath);
  const worker = openStore(t, dbPath);
  const mine = loaded([client("a", ["ta"]), client("b", ["tb"])]);
  server.apply(mine, NOW);
  const theirs = worker.apply(
    loaded([client("a", ["ta"], { disabled: true }), client("c", [])]),
    NOW,
  );
  // The server's snapshot says a is enabled and c absent; the disk says otherwise.
  const next = server.apply(mine, NOW);
  t.deepEqual(rowsTouchedBy(dbPath, next.id), {
    clientsWritten: 2,
    clientsRetired: 2,
    tokensWritten: 1,
    tokensRetired: 0,
  });
  t.deepEqual(server.diff(theirs.id, next.id), {
    clientsAdded: ["b"],
    clientsRemoved: ["c"],
    clientsChanged: ["a"],
    tokensAdded: [digestPrefix(hashToken("tb"))],
    tokensRevoked: [],
  });
  t.like(server.lookup(hashToken("ta")), { disabled: false });
  t.like(server.lookup(hashToken("tb")), { clientId: "b" });
});

test("an id or digest listed twice is refused even when it is unchanged", (t) => {
  const dbPath = tempDb(t);
  const store = openStore(t, dbPath);
  const good = store.apply(loaded([client("a", ["ta"]), client("b", ["tb"])]), NOW);
  const twice = [client("a", ["ta"]), client("a", ["tb"])];
  t.throws(() => store.apply(loaded(twice), NOW), {
    any: true,
    code: "SQLITE_CONSTRAINT_PRIMARYKEY",
  });
  for (const repeated of [
    [client("a", ["ta"]), client("b", ["tb", "tb"])],
    [client("a", ["ta"]), client("b", ["tb", "ta"])],
  ]) {
    t.throws(() => store.apply(loaded(repeated), NOW), {
      any: true,
      code: "SQLITE_CONSTRAINT_PRIMARYKEY",
    });
  }
  t.deepEqual(store.current(), good);
  t.is(rowsTouchedBy(dbPath, good.id + 1).clientsWritten, 0, "nothing of either was kept");
  const next = store.apply(loaded([client("a", ["ta"])]), NOW);
  t.deepEqual(store.diff(good.id, next.id), {
    ...NO_CHANGES,
    clientsRemoved: ["b"],
    tokensRevoked: [digestPrefix(hashToken("tb"))],
  });
});

// --- Property: every generation answers as the keystore it was applied from ---

const IDS = ["a", "b", "c", "d", "e"];
const TOKENS = ["t0", "t1", "t2", "t3", "t4", "t5"];
/** listClients' `now` in the property: expiries on either side of it. */
const PROPERTY_NOW = new Date(1500);

/** Mostly `usual`, so consecutive keystores share unchanged clients that only move. */
const mostly = <T>(usual: T, ...unusual: T[]) =>
  fc.oneof({ weight: 9, arbitrary: fc.constant(usual) }, fc.constantFrom(...unusual));

const clientArbitrary = fc.record({
  id: fc.constantFrom(...IDS),
  name: mostly(null, "name"),
  kind: mostly<ClientKind>("client", "internal"),
  disabled: mostly(false, true),
  tokens: fc.uniqueArray(
    fc.record({
      digest: fc.constantFrom(...TOKENS.map(hashToken)),
      expiresAt: mostly<number | null>(null, 1000, 2000),
    }),
    { selector: (token) => token.digest, maxLength: 3 },
  ),
  upstreamKey: mostly<string | null>(null, "env:CLIENT_KEY", "enc:v1:k1:c2VhbGVk"),
  routes: mostly<readonly string[] | null>(null, ["/v1/"], ["/v1/", "/services/"]),
  models: mostly<readonly string[] | null>(null, ["claude-*"]),
});

/** Unique ids, and each digest on the first client listing it only, as the loader ensures. */
const keystoreArbitrary = fc
  .record({
    defaultUpstreamKey: fc.constantFrom(null, "env:DEFAULT_KEY"),
    clients: fc.uniqueArray(clientArbitrary, { selector: (c) => c.id, maxLength: IDS.length }),
  })
  .map(({ defaultUpstreamKey, clients }): Keystore => {
    const taken = new Set<string>();
    return {
      version: 1,
      defaultUpstreamKey,
      clients: clients.map((c) => {
        const tokens = c.tokens.filter((token) => !taken.has(token.digest));
        for (const token of tokens) taken.add(token.digest);
        return { ...c, tokens };
      }),
    };
  });

const stepArbitrary = fc.record({
  keystore: keystoreArbitrary,
  prune: fc.boolean(),
  /** Apply through the other connection, whose snapshot is then stale or missing. */
  viaOther: mostly(false, true),
});

/** What lookup must answer, straight from the keystore. */
function modelLookup(keystore: Keystore, generation: number, digest: string) {
  for (const c of keystore.clients) {
    const token = c.tokens.find((candidate) => candidate.digest === digest);
    if (token === undefined) continue;
    return {
      generation,
      clientId: c.id,
      kind: c.kind,
      disabled: c.disabled,
      expiresAt: token.expiresAt,
      upstreamKey: c.upstreamKey ?? keystore.defaultUpstreamKey,
      upstreamKeyIsDefault: c.upstreamKey === null && keystore.defaultUpstreamKey !== null,
      routes: c.routes,
      models: c.models,
    } satisfies TokenMatch;
  }
  return undefined;
}

function modelClients(keystore: Keystore) {
  const now = PROPERTY_NOW.getTime();
  return keystore.clients.map((c) => {
    const expiries = c.tokens.flatMap((token) =>
      token.expiresAt === null ? [] : [token.expiresAt],
    );
    const future = expiries.filter((at) => at > now);
    const own = c.upstreamKey?.slice(0, 3);
    return {
      id: c.id,
      name: c.name,
      kind: c.kind,
      disabled: c.disabled,
      tokenCount: c.tokens.length,
      expiredTokenCount: expiries.filter((at) => at <= now).length,
      nextExpiry: future.length === 0 ? null : Math.min(...future),
      upstreamKeyKind:
        own === "enc" || own === "env" ? own : keystore.defaultUpstreamKey ? "default" : "none",
      lastUsedAt: null,
      useCount: 0,
    };
  });
}

function modelDiff(from: Keystore, to: Keystore): KeystoreChanges {
  const byId = (keystore: Keystore) => new Map(keystore.clients.map((c) => [c.id, c]));
  const digests = (keystore: Keystore) =>
    new Set(keystore.clients.flatMap((c) => c.tokens.map((token) => token.digest)));
  const content = (c: KeystoreClient) =>
    JSON.stringify([c.name, c.kind, c.disabled, c.upstreamKey, c.routes, c.models]);
  const [fromIds, toIds] = [byId(from), byId(to)];
  const [fromDigests, toDigests] = [digests(from), digests(to)];
  const only = (present: Set<string>, absent: Set<string>) =>
    [...present]
      .filter((digest) => !absent.has(digest))
      .sort()
      .map(digestPrefix);
  return {
    clientsAdded: to.clients.filter((c) => !fromIds.has(c.id)).map((c) => c.id),
    clientsRemoved: from.clients.filter((c) => !toIds.has(c.id)).map((c) => c.id),
    clientsChanged: to.clients
      .filter((c) => {
        const before = fromIds.get(c.id);
        return before !== undefined && content(before) !== content(c);
      })
      .map((c) => c.id),
    tokensAdded: only(toDigests, fromDigests),
    tokensRevoked: only(fromDigests, toDigests),
  };
}

test("random edit sequences: each generation answers as the keystore it came from", (t) => {
  const root = mkdtempSync(path.join(tmpdir(), "keygate-store-property-"));
  t.teardown(() => rmSync(root, { recursive: true, force: true }));
  let run = 0;
  fc.assert(
    fc.property(fc.array(stepArbitrary, { minLength: 1, maxLength: 10 }), (steps) => {
      const dir = path.join(root, String(run++));
      mkdirSync(dir);
      const dbPath = path.join(dir, "keystore.db");
      const one = KeystoreStore.open(dbPath);
      const other = KeystoreStore.open(dbPath);
      try {
        let previous: { keystore: Keystore; id: number } | undefined;
        for (const step of steps) {
          const [writer, follower] = step.viaOther ? [other, one] : [one, other];
          const { id } = writer.apply(
            loaded(step.keystore.clients, step.keystore.defaultUpstreamKey),
            NOW,
            {
              prune: step.prune,
            },
          );
          follower.refresh();
          // A third connection with no snapshot and nothing cached: what a restart serves.
          const fresh = KeystoreStore.open(dbPath);
          try {
            for (const [name, store] of Object.entries({ one, other, fresh })) {
              for (const digest of [...TOKENS, "never-listed"].map(hashToken)) {
                const expected = modelLookup(step.keystore, id, digest);
                deepStrictEqual(store.lookup(digest), expected, `${name}: lookup`);
              }
              const clients = store.listClients(PROPERTY_NOW);
              deepStrictEqual(clients, modelClients(step.keystore), `${name}: listClients`);
              if (previous !== undefined) {
                const changes = modelDiff(previous.keystore, step.keystore);
                deepStrictEqual(store.diff(previous.id, id), changes, `${name}: diff`);
              }
            }
          } finally {
            fresh.close();
          }
          previous = { keystore: step.keystore, id };
        }
      } finally {
        one.close();
        other.close();
      }
    }),
    { numRuns: 300 },
  );
  t.pass();
});

// --- Migration from the v1 layout: one full copy of every row per generation ---

/** The v1 schema exactly as keygate 0.1 created it (MIGRATIONS[0]), frozen here on purpose. */
const V1_SCHEMA = `
  CREATE TABLE generations (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    source_sha256 TEXT NOT NULL,
    loaded_at TEXT NOT NULL,
    client_count INTEGER NOT NULL,
    default_upstream_key TEXT
  ) STRICT;
  CREATE TABLE clients (
    generation INTEGER NOT NULL REFERENCES generations (id) ON DELETE CASCADE,
    id TEXT NOT NULL,
    position INTEGER NOT NULL,
    name TEXT,
    kind TEXT NOT NULL CHECK (kind IN ('client', 'internal')),
    disabled INTEGER NOT NULL CHECK (disabled IN (0, 1)),
    upstream_key TEXT CHECK (upstream_key IS NULL OR upstream_key GLOB 'enc:*' OR upstream_key GLOB 'env:*'),
    routes TEXT,
    models TEXT,
    PRIMARY KEY (generation, id)
  ) STRICT, WITHOUT ROWID;
  CREATE TABLE tokens (
    generation INTEGER NOT NULL,
    digest TEXT NOT NULL CHECK (length(digest) = 64),
    client_id TEXT NOT NULL,
    expires_at INTEGER,
    PRIMARY KEY (generation, digest),
    FOREIGN KEY (generation, client_id) REFERENCES clients (generation, id) ON DELETE CASCADE
  ) STRICT, WITHOUT ROWID;
  CREATE INDEX tokens_by_client ON tokens (generation, client_id);
  CREATE TABLE client_usage (
    client_id TEXT PRIMARY KEY,
    last_used_at INTEGER NOT NULL,
    use_count INTEGER NOT NULL
  ) STRICT;
`;

/** A v1 database as a running v1 server leaves it: generation 1 pruned, 2 and 3 stored. */
function writeV1Database(dbPath: string): void {
  const db = new Database(dbPath);
  try {
    db.pragma("journal_mode = WAL");
    db.pragma("foreign_keys = ON");
    db.exec(V1_SCHEMA);
    db.pragma("user_version = 1");
    const generation = db.prepare(
      `INSERT INTO generations (source_sha256, loaded_at, client_count, default_upstream_key)
       VALUES (?, '2026-05-01T00:00:00.000Z', ?, 'env:DEFAULT_KEY')`,
    );
    const addClient = db.prepare(
      `INSERT INTO clients (generation, id, position, name, kind, disabled, upstream_key, routes, models)
       VALUES (?, ?, ?, ?, 'client', 0, ?, ?, NULL)`,
    );
    const addToken = db.prepare(
      "INSERT INTO tokens (generation, digest, client_id, expires_at) VALUES (?, ?, ?, ?)",
    );
    for (let count = 0; count < 3; count++) generation.run("a".repeat(64), 2);
    db.prepare("DELETE FROM generations WHERE id = 1").run();
    addClient.run(2, "old", 0, null, null, null);
    addClient.run(2, "kept", 1, null, null, null);
    addToken.run(2, hashToken("old-token"), "old", null);
    addToken.run(2, hashToken("kept-token"), "kept", null);
    addClient.run(3, "kept", 0, "Kept", "env:KEPT_KEY", JSON.stringify(["/v1/"]));
    addClient.run(3, "new", 1, null, null, null);
    addToken.run(3, hashToken("kept-token"), "kept", Date.parse("2027-01-01T00:00:00Z"));
    addToken.run(3, hashToken("new-token"), "new", null);
    db.prepare("INSERT INTO client_usage VALUES ('kept', 123, 4)").run();
  } finally {
    db.close();
  }
}

test("a v1 database opens with its newest generation served and the v1 tables gone", (t) => {
  const dbPath = tempDb(t);
  writeV1Database(dbPath);
  const store = openStore(t, dbPath);

  t.like(store.current(), { id: 3, clientCount: 2, defaultUpstreamKey: "env:DEFAULT_KEY" });
  t.like(store.lookup(hashToken("kept-token")), {
    generation: 3,
    clientId: "kept",
    upstreamKey: "env:KEPT_KEY",
    expiresAt: Date.parse("2027-01-01T00:00:00Z"),
    routes: ["/v1/"],
  });
  t.like(store.lookup(hashToken("new-token")), { clientId: "new", upstreamKeyIsDefault: true });
  t.is(store.lookup(hashToken("old-token")), undefined, "generation 2 only");
  t.like(store.listClients(NOW), [
    { id: "kept", name: "Kept", useCount: 4, lastUsedAt: 123 },
    { id: "new", upstreamKeyKind: "default" },
  ]);

  const schema = inspect(dbPath, (db) => ({
    version: db.pragma("user_version", { simple: true }),
    tables: db
      .prepare("SELECT name FROM sqlite_schema WHERE type = 'table' ORDER BY name")
      .pluck()
      .all(),
    clientColumns: db.prepare("SELECT name FROM pragma_table_info('clients')").pluck().all(),
    tokenColumns: db.prepare("SELECT name FROM pragma_table_info('tokens')").pluck().all(),
    generations: db.prepare("SELECT id FROM generations").pluck().all(),
  }));
  t.deepEqual(schema, {
    version: 2,
    tables: ["client_usage", "clients", "generations", "sqlite_sequence", "tokens"],
    clientColumns: [
      "id",
      "since",
      "until",
      "position",
      "name",
      "kind",
      "disabled",
      "upstream_key",
      "routes",
      "models",
    ],
    tokenColumns: ["digest", "since", "until", "client_id", "expires_at"],
    generations: [3],
  });

  // Ids keep growing past the v1 ones, and the next apply is incremental against them.
  const next = store.apply(loaded([client("kept", ["kept-token"])]), NOW);
  t.is(next.id, 4);
  t.deepEqual(store.diff(3, 4), {
    ...NO_CHANGES,
    clientsRemoved: ["new"],
    clientsChanged: ["kept"],
    tokensRevoked: [digestPrefix(hashToken("new-token"))],
  });
  t.like(rowsTouchedBy(dbPath, 4), { tokensWritten: 1, tokensRetired: 2 });
});
