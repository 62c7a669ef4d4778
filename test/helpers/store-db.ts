/**
 * KeystoreStore test plumbing: a temporary database file, a store closed at teardown,
 * and a second read-only connection for asserting what is on disk.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import type { ExecutionContext } from "ava";
import Database from "better-sqlite3";
import { KeystoreStore } from "../../server/keystore/store.js";

/** A database path in a fresh temporary directory (removed at teardown); `subdir` is not created. */
export function tempDb(t: ExecutionContext, subdir = ""): string {
  const dir = mkdtempSync(path.join(tmpdir(), "keygate-store-"));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  return path.join(dir, subdir, "keystore.db");
}

/** Opens a store on `dbPath`, closed at teardown unless the test closed it first. */
export function openStore(t: ExecutionContext, dbPath: string): KeystoreStore {
  const store = KeystoreStore.open(dbPath);
  t.teardown(() => {
    try {
      store.close();
    } catch {
      // already closed by the test
    }
  });
  return store;
}

/** A second, read-only connection: what the tests check is what is on disk. */
export function inspect<T>(dbPath: string, query: (db: Database.Database) => T): T {
  const db = new Database(dbPath, { readonly: true });
  try {
    return query(db);
  } finally {
    db.close();
  }
}
