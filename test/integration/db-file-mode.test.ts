/**
 * The SQLite database holds every token digest and upstream key reference, so it is as
 * private as keystore.yaml (0600): SQLite itself would create it, and then its -wal and
 * -shm files, world-readable under the usual umask.
 */
import { chmodSync, existsSync, statSync } from "node:fs";
import path from "node:path";
import test from "ava";
import Database from "better-sqlite3";
import { parseKeystore } from "../../server/keystore/format/load.js";
import { KeystoreStore } from "../../server/keystore/store/store.js";
import { tempDb, writeV2Database } from "../helpers/store-db.js";

const KEYSTORE = `version: 1
clients:
  - id: mode-check
    tokens:
      - sha256: ${"a".repeat(64)}
`;

function modeOf(file: string): string {
  return (statSync(file).mode & 0o777).toString(8).padStart(4, "0");
}

const FILES = (dbPath: string) => [dbPath, `${dbPath}-wal`, `${dbPath}-shm`];

test("a new database and its -wal and -shm files are created 0600", (t) => {
  const dbPath = tempDb(t, "data");
  const store = KeystoreStore.open(dbPath);
  t.teardown(() => store.close());
  store.apply(
    parseKeystore(KEYSTORE, {
      file: "keystore.yaml",
      masterKeys: new Map(),
      env: {},
      requireClients: true,
    }),
    new Date(),
  );
  for (const file of FILES(dbPath)) {
    t.true(existsSync(file), `${file} exists while the store is open`);
    t.is(modeOf(file), "0600", file);
  }
  t.is(modeOf(path.dirname(dbPath)), "0700", "its directory too");
});

test("files an older keygate left world-readable are narrowed on open", (t) => {
  const dbPath = tempDb(t);
  // Another connection keeps the WAL and shared-memory files in place while keygate opens.
  const other = new Database(dbPath);
  t.teardown(() => other.close());
  other.pragma("journal_mode = WAL");
  other.exec("CREATE TABLE IF NOT EXISTS scratch (x); INSERT INTO scratch VALUES (1);");
  for (const file of FILES(dbPath)) chmodSync(file, 0o644);

  KeystoreStore.open(dbPath).close();
  for (const file of FILES(dbPath)) t.is(modeOf(file), "0600", file);
});

test("a database migrated from an older schema keeps WAL and owner-only files", (t) => {
  const dbPath = tempDb(t);
  writeV2Database(dbPath, [
    {
      defaultUpstreamKey: null,
      clients: [{ id: "mode-check" }],
      tokens: [["a".repeat(64), "mode-check", null]],
    },
  ]);
  chmodSync(dbPath, 0o644);
  const store = KeystoreStore.open(dbPath);
  t.teardown(() => store.close());
  t.like(store.lookup("a".repeat(64)), { clientId: "mode-check" });
  for (const file of FILES(dbPath)) t.is(modeOf(file), "0600", file);
  const db = new Database(dbPath, { readonly: true });
  t.teardown(() => db.close());
  t.is(db.pragma("journal_mode", { simple: true }), "wal");
  t.is(db.pragma("user_version", { simple: true }), 4);
});
