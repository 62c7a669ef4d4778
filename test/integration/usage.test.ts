/**
 * Last use per client reaches SQLite (batched, flushed at the latest on shutdown) and
 * is what `keygate keystore list` reads.
 */
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import test from "ava";
import Database from "better-sqlite3";
import { hashToken } from "../../server/crypto/token-hash.js";
import { KeystoreStore } from "../../server/keystore/store/store.js";
import { checkRequest } from "../helpers/check-request.js";
import { startTestKeygate } from "../helpers/keygate-in-process.js";

test("allowed checks are counted per client and survive a restart", async (t) => {
  const kg = await startTestKeygate({
    keystore: `version: 1\nclients:\n  - id: used\n    tokens: [{ sha256: ${hashToken("t-used")} }]\n  - id: idle\n    tokens: [{ sha256: ${hashToken("t-idle")} }]\n`,
  });
  const before = Date.now();
  for (let i = 0; i < 3; i++) {
    await kg.client.check(
      checkRequest({ json: { model: "m" }, headers: { authorization: "Bearer t-used" } }),
    );
  }
  await kg.client.check(
    checkRequest({ json: { model: "m" }, headers: { authorization: "Bearer wrong" } }),
  );
  await kg.stop();

  const store = KeystoreStore.open(kg.dbPath);
  try {
    const byId = Object.fromEntries(store.listClients().map((c) => [c.id, c]));
    t.is(byId.used?.useCount, 3);
    t.true((byId.used?.lastUsedAt ?? 0) >= before);
    t.is(byId.idle?.useCount, 0);
    t.is(byId.idle?.lastUsedAt, null);
  } finally {
    store.close();
  }
});

test("the server's connection never waits for a writer: a busy database fails fast", (t) => {
  const dir = mkdtempSync(path.join(tmpdir(), "keygate-busy-"));
  const dbPath = path.join(dir, "keystore.db");
  const store = KeystoreStore.open(dbPath);
  store.neverWaitForWriters();
  const writer = new Database(dbPath);
  try {
    writer.exec("BEGIN IMMEDIATE");
    const started = performance.now();
    let code: unknown;
    try {
      store.recordUsage([{ clientId: "a", lastUsedAt: 1, count: 1 }]);
    } catch (error) {
      code = (error as { code?: unknown }).code;
    }
    t.is(code, "SQLITE_BUSY");
    t.true(performance.now() - started < 100, "did not wait for the busy timeout");
  } finally {
    writer.exec("ROLLBACK");
    writer.close();
    store.close();
  }
});
