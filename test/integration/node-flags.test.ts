/**
 * The built server and its Node flags (server/node-flags.ts): V8 reads them only at
 * start-up, so a server launched without them says so once, and one launched as
 * `npm start` launches it stays quiet.
 */
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import test, { type ExecutionContext } from "ava";
import { hashToken } from "../../server/crypto/token-hash.js";
import { SERVER_NODE_FLAGS } from "../../server/node-flags.js";
import { startKeygate } from "../helpers/keygate-process.js";

const MISSING_FLAGS = "node was started without keygate's server flags";

async function flagWarnings(t: ExecutionContext, nodeArgs?: readonly string[]) {
  const dir = mkdtempSync(path.join(tmpdir(), "keygate-flags-"));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const keystore = path.join(dir, "keystore.yaml");
  writeFileSync(
    keystore,
    `version: 1\nclients:\n  - id: alpha\n    tokens:\n      - sha256: ${hashToken("kg-flags")}\n`,
  );
  const kg = await startKeygate({
    keystore,
    db: path.join(dir, "keystore.db"),
    ...(nodeArgs === undefined ? {} : { nodeArgs }),
  });
  const status = await kg.stop();
  t.is(status.code, 0, "SIGTERM drains and exits 0");
  return kg.logLines().filter((line) => String(line.msg).startsWith(MISSING_FLAGS));
}

test("a server started without the Node flags warns once, naming them", async (t) => {
  const warnings = await flagWarnings(t, []);
  t.is(warnings.length, 1);
  t.is(warnings[0]?.level, "warn");
  t.deepEqual(warnings[0]?.missing, [...SERVER_NODE_FLAGS]);
});

test("a server started as npm start starts it does not warn", async (t) => {
  t.deepEqual(await flagWarnings(t), []);
});
