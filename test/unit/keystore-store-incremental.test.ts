/**
 * KeystoreStore applies a keystore as the change set against the stored state: these
 * tests check the change set it reports, that only those rows are written (counted by
 * triggers in the database file), that the stored state is always what the keystore says,
 * and that databases written by the v1 and v2 schemas open and serve their last good
 * generation.
 */
import { deepStrictEqual } from "node:assert/strict";
import { createHash } from "node:crypto";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import test from "ava";
import Database from "better-sqlite3";
import fc from "fast-check";
import { digestPrefix, hashToken } from "../../server/crypto/token-hash.js";
import type {
  ClientKind,
  Keystore,
  KeystoreClient,
  LoadedKeystore,
  TokenMatch,
} from "../../server/keystore/format/model.js";
import { type SyncRequest, syncKeystoreFile } from "../../server/keystore/reload/sync-keystore.js";
import { type KeystoreChanges, KeystoreStore } from "../../server/keystore/store/store.js";
import {
  inspect,
  type OldGeneration,
  openStore,
  tempDb,
  writeV1Database,
  writeV2Database,
} from "../helpers/store-db.js";

const NOW = new Date("2026-06-01T00:00:00Z");
const NO_CHANGES: KeystoreChanges = {
  clientsAdded: [],
  clientsRemoved: [],
  clientsChanged: [],
  tokensAdded: [],
  tokensRevoked: [],
};

interface Writes {
  clientsInserted: number;
  clientsUpdated: number;
  clientsDeleted: number;
  tokensInserted: number;
  tokensUpdated: number;
  tokensDeleted: number;
}
const NO_WRITES: Writes = {
  clientsInserted: 0,
  clientsUpdated: 0,
  clientsDeleted: 0,
  tokensInserted: 0,
  tokensUpdated: 0,
  tokensDeleted: 0,
};

/**
 * Counts the rows written to clients and tokens from now on, with triggers stored in the
 * database file (so they fire in the store's own connection). Returns a reader that
 * reports the counts since its last call.
 */
function watchWrites(dbPath: string): () => Writes {
  const db = new Database(dbPath);
  try {
    db.exec("CREATE TABLE test_writes (name TEXT NOT NULL)");
    for (const table of ["clients", "tokens"]) {
      for (const [op, verb] of [
        ["INSERT", "Inserted"],
        ["UPDATE", "Updated"],
        ["DELETE", "Deleted"],
      ]) {
        db.exec(
          `CREATE TRIGGER test_${table}_${verb} AFTER ${op} ON ${table}
           BEGIN INSERT INTO test_writes VALUES ('${table}${verb}'); END`,
        );
      }
    }
  } finally {
    db.close();
  }
  return () => {
    const reader = new Database(dbPath);
    try {
      const counts = reader
        .prepare<[], [keyof Writes, number]>("SELECT name, count(*) FROM test_writes GROUP BY name")
        .raw()
        .all();
      reader.exec("DELETE FROM test_writes");
      return { ...NO_WRITES, ...Object.fromEntries(counts) };
    } finally {
      reader.close();
    }
  };
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

const prefixes = (...tokens: string[]) => tokens.map((token) => digestPrefix(hashToken(token)));

test("a one-client edit at 2 000 clients writes only that client's rows", (t) => {
  const dbPath = tempDb(t);
  const store = openStore(t, dbPath);
  const writes = watchWrites(dbPath);
  const before = manyClients(2000);
  const first = store.apply(loaded(before), NOW);
  t.like(writes(), { clientsInserted: 2000, tokensInserted: 2000 });
  t.is(first.changes.clientsAdded.length, 2000);

  // Disable client-0700 and rotate its token: one client updated, one token in, one out.
  const edited = replaceAt(
    before,
    700,
    client("client-0700", ["rotated"], { disabled: true, name: "rotated" }),
  );
  const second = store.apply(loaded(edited), NOW);
  t.deepEqual(writes(), { ...NO_WRITES, clientsUpdated: 1, tokensInserted: 1, tokensDeleted: 1 });
  t.deepEqual(second.changes, {
    ...NO_CHANGES,
    clientsChanged: ["client-0700"],
    tokensAdded: prefixes("rotated"),
    tokensRevoked: prefixes("token-0700"),
  });
  t.like(store.lookup(hashToken("rotated")), {
    generation: second.generation.id,
    clientId: "client-0700",
    disabled: true,
  });
  t.is(store.lookup(hashToken("token-0700")), undefined, "the old token is revoked at once");
  t.like(store.lookup(hashToken("token-0701")), {
    generation: second.generation.id,
    clientId: "client-0701",
  });

  const third = store.apply(loaded(edited.slice(0, 1999)), NOW);
  t.deepEqual(writes(), { ...NO_WRITES, clientsDeleted: 1, tokensDeleted: 1 });
  t.deepEqual(third.changes, {
    ...NO_CHANGES,
    clientsRemoved: ["client-1999"],
    tokensRevoked: prefixes("token-1999"),
  });
});

test("a token moved to another client is updated in place: neither added nor revoked", (t) => {
  const dbPath = tempDb(t);
  const store = openStore(t, dbPath);
  store.apply(loaded([client("a", ["shared"]), client("b", [])]), NOW);
  const writes = watchWrites(dbPath);
  const moved = store.apply(loaded([client("a", []), client("b", ["shared"])]), NOW);
  t.deepEqual(writes(), { ...NO_WRITES, tokensUpdated: 1 });
  t.deepEqual(moved.changes, NO_CHANGES);
  t.like(store.lookup(hashToken("shared")), { generation: moved.generation.id, clientId: "b" });

  const revoked = loaded([client("a", []), client("b", [])]);
  const withExpiry = loaded([
    client("a", []),
    { ...client("b", []), tokens: [{ digest: hashToken("shared"), expiresAt: 5 }] },
  ]);
  store.apply(withExpiry, NOW);
  t.deepEqual(writes(), { ...NO_WRITES, tokensUpdated: 1 });
  t.like(store.lookup(hashToken("shared")), { expiresAt: 5 });
  t.deepEqual(store.apply(revoked, NOW).changes, {
    ...NO_CHANGES,
    tokensRevoked: prefixes("shared"),
  });
});

test("a client can lose every token and keep its row", (t) => {
  const dbPath = tempDb(t);
  const store = openStore(t, dbPath);
  store.apply(loaded([client("a", ["one", "two"])]), NOW);
  const writes = watchWrites(dbPath);
  const second = store.apply(loaded([client("a", [])]), NOW);
  t.deepEqual(writes(), { ...NO_WRITES, tokensDeleted: 2 });
  t.is(store.lookup(hashToken("one")), undefined);
  t.deepEqual(
    store.listClients().map((row) => row.id),
    ["a"],
  );
  t.deepEqual(second.changes, {
    ...NO_CHANGES,
    tokensRevoked: [hashToken("one"), hashToken("two")].sort().map(digestPrefix),
  });
});

test("the same content, or the same clients reordered, writes only the generation", (t) => {
  const dbPath = tempDb(t);
  const store = openStore(t, dbPath);
  const [a, b, c] = [
    client("a", ["ta"], { routes: ["/v1/"] }),
    client("b", ["tb"]),
    client("c", []),
  ];
  const first = store.apply(loaded([a, b, c]), NOW);
  const writes = watchWrites(dbPath);
  const second = store.apply(loaded([a, b, c]), NOW);
  const third = store.apply(loaded([c, a, b]), NOW);
  t.deepEqual(writes(), NO_WRITES);
  t.deepEqual([second.changes, third.changes], [NO_CHANGES, NO_CHANGES]);
  t.deepEqual(
    [second.generation.id, third.generation.id],
    [first.generation.id + 1, first.generation.id + 2],
  );
  t.like(store.lookup(hashToken("ta")), { generation: third.generation.id, routes: ["/v1/"] });
});

test("apply diffs against what is stored, whichever connection wrote it", (t) => {
  const dbPath = tempDb(t);
  const server = openStore(t, dbPath);
  const worker = openStore(t, dbPath);
  const mine = loaded([client("a", ["ta"]), client("b", ["tb"])]);
  server.apply(mine, NOW);
  worker.apply(loaded([client("a", ["ta"], { disabled: true }), client("c", [])]), NOW);
  const next = server.apply(mine, NOW);
  t.deepEqual(next.changes, {
    clientsAdded: ["b"],
    clientsRemoved: ["c"],
    clientsChanged: ["a"],
    tokensAdded: prefixes("tb"),
    tokensRevoked: [],
  });
  t.like(server.lookup(hashToken("ta")), { disabled: false });
  t.like(server.lookup(hashToken("tb")), { clientId: "b" });
});

test("an id or digest listed twice is refused even when it is unchanged, and nothing is written", (t) => {
  const dbPath = tempDb(t);
  const store = openStore(t, dbPath);
  const good = store.apply(loaded([client("a", ["ta"]), client("b", ["tb"])]), NOW).generation;
  const writes = watchWrites(dbPath);
  for (const repeated of [
    [client("a", ["ta"]), client("a", ["tb"])],
    [client("a", ["ta"]), client("b", ["tb", "tb"])],
    [client("a", ["ta"]), client("b", ["tb", "ta"])],
    [client("a", ["ta"]), client("c", ["tc", "tc"])],
  ]) {
    t.throws(() => store.apply(loaded(repeated), NOW), {
      any: true,
      code: "SQLITE_CONSTRAINT_PRIMARYKEY",
    });
  }
  t.deepEqual(writes(), NO_WRITES);
  t.deepEqual(store.current(), good);
  const next = store.apply(loaded([client("a", ["ta"])]), NOW);
  t.is(next.generation.id, good.id + 1);
  t.deepEqual(next.changes, {
    ...NO_CHANGES,
    clientsRemoved: ["b"],
    tokensRevoked: prefixes("tb"),
  });
});

// --- Property: the stored state and the change set are those of the keystores applied ---

const IDS = ["a", "b", "c", "d", "e"];
const TOKENS = ["t0", "t1", "t2", "t3", "t4", "t5"];

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
  /** Apply through the other connection. */
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

/** The change set, straight from the two keystores (an empty one before the first). */
function modelChanges(from: Keystore, to: Keystore): KeystoreChanges {
  const byId = (keystore: Keystore) => new Map(keystore.clients.map((c) => [c.id, c]));
  const digests = (keystore: Keystore) =>
    keystore.clients.flatMap((c) => c.tokens.map((token) => token.digest));
  const content = (c: KeystoreClient) =>
    JSON.stringify([c.name, c.kind, c.disabled, c.upstreamKey, c.routes, c.models]);
  const [fromIds, toIds] = [byId(from), byId(to)];
  const [fromDigests, toDigests] = [digests(from), digests(to)];
  return {
    clientsAdded: to.clients.filter((c) => !fromIds.has(c.id)).map((c) => c.id),
    clientsRemoved: from.clients
      .filter((c) => !toIds.has(c.id))
      .map((c) => c.id)
      .sort(),
    clientsChanged: to.clients
      .filter((c) => {
        const before = fromIds.get(c.id);
        return before !== undefined && content(before) !== content(c);
      })
      .map((c) => c.id),
    tokensAdded: toDigests.filter((digest) => !fromDigests.includes(digest)).map(digestPrefix),
    tokensRevoked: fromDigests
      .filter((digest) => !toDigests.includes(digest))
      .sort()
      .map(digestPrefix),
  };
}

/** The tables as they must read after applying `keystore`: as if written in full. */
function modelTables(keystore: Keystore) {
  const byKey = <T extends readonly unknown[]>(rows: T[]) =>
    rows.sort((x, y) => String(x[0]).localeCompare(String(y[0])));
  return {
    clients: byKey(
      keystore.clients.map((c) => [
        c.id,
        {
          name: c.name,
          kind: c.kind,
          disabled: c.disabled,
          upstreamKey: c.upstreamKey,
          routes: c.routes,
          models: c.models,
        },
      ]),
    ),
    tokens: byKey(
      keystore.clients.flatMap((c) =>
        c.tokens.map((token) => [token.digest, c.id, token.expiresAt]),
      ),
    ),
  };
}

function storedTables(dbPath: string) {
  return inspect(dbPath, (db) => ({
    clients: db
      .prepare<[], [string, string]>("SELECT id, record FROM clients ORDER BY id")
      .raw()
      .all()
      .map(([id, record]) => [id, JSON.parse(record)]),
    tokens: db
      .prepare("SELECT digest, client_id, expires_at FROM tokens ORDER BY digest")
      .raw()
      .all(),
  }));
}

const EMPTY: Keystore = { version: 1, defaultUpstreamKey: null, clients: [] };

test("random edit sequences: the tables, lookups and change sets follow each keystore", (t) => {
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
        let previous = EMPTY;
        for (const step of steps) {
          const [writer, follower] = step.viaOther ? [other, one] : [one, other];
          const { generation, changes } = writer.apply(
            loaded(step.keystore.clients, step.keystore.defaultUpstreamKey),
            NOW,
          );
          deepStrictEqual(changes, modelChanges(previous, step.keystore), "changes");
          deepStrictEqual(storedTables(dbPath), modelTables(step.keystore), "tables");
          follower.refresh();
          // A third connection with nothing cached: what a restart serves.
          const fresh = KeystoreStore.open(dbPath);
          try {
            for (const [name, store] of Object.entries({ one, other, fresh })) {
              for (const digest of [...TOKENS, "never-listed"].map(hashToken)) {
                const expected = modelLookup(step.keystore, generation.id, digest);
                deepStrictEqual(store.lookup(digest), expected, `${name}: lookup`);
              }
              deepStrictEqual(
                store.listClients(),
                step.keystore.clients
                  .map((c) => ({ id: c.id, lastUsedAt: null, useCount: 0 }))
                  .sort((x, y) => x.id.localeCompare(y.id)),
                `${name}: listClients`,
              );
            }
          } finally {
            fresh.close();
          }
          previous = step.keystore;
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

// --- Migration from the v1 and v2 layouts ---

const KEPT_EXPIRY = Date.parse("2027-01-01T00:00:00Z");

/** Generation 2 as an older keygate stored it; generation 3 below is the last good one. */
const SECOND: OldGeneration = {
  defaultUpstreamKey: "env:DEFAULT_KEY",
  clients: [{ id: "old" }, { id: "kept", name: "Old name" }],
  tokens: [
    [hashToken("old-token"), "old", null],
    [hashToken("kept-token"), "kept", null],
  ],
};
const THIRD: OldGeneration = {
  defaultUpstreamKey: "env:DEFAULT_KEY",
  clients: [
    {
      id: "kept",
      name: 'Kept «quoted"»',
      kind: "internal",
      disabled: true,
      upstreamKey: "env:KEPT_KEY",
      routes: ["/v1/"],
      models: ["claude-*"],
    },
    { id: "new" },
  ],
  tokens: [
    [hashToken("kept-token"), "kept", KEPT_EXPIRY],
    [hashToken("new-token"), "new", null],
  ],
};
/** THIRD as keystore.yaml would say it. */
const THIRD_KEYSTORE = loaded(
  [
    {
      ...client("kept", [], {
        name: 'Kept «quoted"»',
        kind: "internal",
        disabled: true,
        upstreamKey: "env:KEPT_KEY",
        routes: ["/v1/"],
        models: ["claude-*"],
      }),
      tokens: [{ digest: hashToken("kept-token"), expiresAt: KEPT_EXPIRY }],
    },
    client("new", ["new-token"]),
  ],
  "env:DEFAULT_KEY",
);

for (const [version, write] of [
  [1, (dbPath: string) => writeV1Database(dbPath, [SECOND, THIRD], [["kept", 123, 4]])],
  [2, (dbPath: string) => writeV2Database(dbPath, [SECOND, THIRD])],
] as const) {
  test(`a v${version} database opens as the current state of its last good generation`, (t) => {
    const dbPath = tempDb(t);
    write(dbPath);
    const store = openStore(t, dbPath);

    t.like(store.current(), { id: 3, clientCount: 2, defaultUpstreamKey: "env:DEFAULT_KEY" });
    t.deepEqual(store.lookup(hashToken("kept-token")), {
      generation: 3,
      clientId: "kept",
      kind: "internal",
      disabled: true,
      expiresAt: KEPT_EXPIRY,
      upstreamKey: "env:KEPT_KEY",
      upstreamKeyIsDefault: false,
      routes: ["/v1/"],
      models: ["claude-*"],
    });
    t.like(store.lookup(hashToken("new-token")), { clientId: "new", upstreamKeyIsDefault: true });
    t.is(store.lookup(hashToken("old-token")), undefined, "generation 2 only");
    t.deepEqual(
      store.listClients(),
      version === 1
        ? [
            { id: "kept", lastUsedAt: 123, useCount: 4 },
            { id: "new", lastUsedAt: null, useCount: 0 },
          ]
        : [
            { id: "kept", lastUsedAt: null, useCount: 0 },
            { id: "new", lastUsedAt: null, useCount: 0 },
          ],
    );
    t.deepEqual(
      inspect(dbPath, (db) => ({
        version: db.pragma("user_version", { simple: true }),
        journal: db.pragma("journal_mode", { simple: true }),
        tables: db
          .prepare("SELECT name FROM sqlite_schema WHERE type IN ('table', 'index') ORDER BY name")
          .pluck()
          .all()
          .filter((name) => !String(name).startsWith("sqlite_autoindex")),
        clientColumns: db.prepare("SELECT name FROM pragma_table_info('clients')").pluck().all(),
        tokenColumns: db.prepare("SELECT name FROM pragma_table_info('tokens')").pluck().all(),
        generations: db.prepare("SELECT id FROM generations").pluck().all(),
      })),
      {
        version: 4,
        journal: "wal",
        tables: [
          "client_usage",
          "clients",
          "generations",
          "sqlite_sequence",
          "token_usage",
          "tokens",
        ],
        clientColumns: ["id", "record"],
        tokenColumns: ["digest", "client_id", "expires_at"],
        generations: [2, 3],
      },
    );

    // The records carried over read exactly as the same keystore applied now: no changes.
    const writes = watchWrites(dbPath);
    const same = store.apply(THIRD_KEYSTORE, NOW);
    t.is(same.generation.id, 4, "ids keep growing past the old ones");
    t.deepEqual(same.changes, NO_CHANGES);
    t.deepEqual(writes(), NO_WRITES);
    const next = store.apply(loaded(THIRD_KEYSTORE.keystore.clients.slice(0, 1)), NOW);
    t.deepEqual(next.changes, {
      ...NO_CHANGES,
      clientsRemoved: ["new"],
      tokensRevoked: prefixes("new-token"),
    });
  });
}

test("a migrated database is not migrated again", (t) => {
  const dbPath = tempDb(t);
  writeV2Database(dbPath, [SECOND, THIRD]);
  KeystoreStore.open(dbPath).close();
  const store = openStore(t, dbPath);
  t.like(store.current(), { id: 3 });
  t.like(store.lookup(hashToken("kept-token")), { clientId: "kept" });
});

test("a restart on a migrated database and a broken file serves the last good state; the fix reports what changed", (t) => {
  const dbPath = tempDb(t);
  writeV2Database(dbPath, [SECOND, THIRD]);
  const keystorePath = path.join(path.dirname(dbPath), "keystore.yaml");
  const request: SyncRequest = {
    path: keystorePath,
    masterKeys: new Map(),
    env: {},
    requireClients: true,
    upstreamEnvPrefix: null,
    lastSeenSha256: null,
  };
  const store = openStore(t, dbPath);
  writeFileSync(keystorePath, "version: 1\nclients: [\n");
  const broken = syncKeystoreFile(store, request, NOW);
  t.like(broken.outcome, { result: "failed" });
  t.is(broken.changes, null);
  t.like(store.current(), { id: 3 });
  t.like(store.lookup(hashToken("kept-token")), { generation: 3, clientId: "kept" });

  writeFileSync(
    keystorePath,
    `version: 1\nclients:\n  - id: new\n    tokens: [{ sha256: ${hashToken("new-token")} }]\n`,
  );
  const fixed = syncKeystoreFile(store, request, NOW);
  t.like(fixed.outcome, { result: "applied", generation: { id: 4 } });
  t.deepEqual(fixed.changes, {
    ...NO_CHANGES,
    clientsRemoved: ["kept"],
    tokensRevoked: prefixes("kept-token"),
  });
  t.is(store.lookup(hashToken("kept-token")), undefined);
});

test("the first sync into an empty database reports no change list (it would name every client)", (t) => {
  const dbPath = tempDb(t);
  const keystorePath = path.join(path.dirname(dbPath), "keystore.yaml");
  writeFileSync(
    keystorePath,
    `version: 1\nclients:\n  - id: a\n    tokens: [{ sha256: ${hashToken("ta")} }]\n`,
  );
  const store = openStore(t, dbPath);
  const request: SyncRequest = {
    path: keystorePath,
    masterKeys: new Map(),
    env: {},
    requireClients: true,
    upstreamEnvPrefix: null,
    lastSeenSha256: null,
  };
  const first = syncKeystoreFile(store, request, NOW);
  t.like(first.outcome, { result: "applied", generation: { id: 1 } });
  t.is(first.changes, null);
  // The same bytes again (a restart): the generation served, nothing written.
  const again = syncKeystoreFile(store, request, NOW);
  t.like(again.outcome, { result: "applied", generation: { id: 1 } });
  t.is(again.changes, null);
});
