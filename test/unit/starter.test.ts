import { existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import test, { type ExecutionContext } from "ava";
import { hasValidChecksum } from "../../server/crypto/token-format.js";
import { hashToken } from "../../server/crypto/token-hash.js";
import { parseKeystore, readKeystoreFile } from "../../server/keystore/format/load.js";
import { starterKeystoreText, writeStarterKeystore } from "../../server/keystore/format/starter.js";

const ENFORCE = { masterKeys: new Map(), env: {}, requireClients: true } as const;
const MODELINE = /^# yaml-language-server: \$schema=(\S+)\n/;

function tempPath(t: ExecutionContext, ...parts: string[]): string {
  const dir = mkdtempSync(path.join(tmpdir(), "keygate-starter-"));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  return path.join(dir, ...parts);
}

test("writes the keystore with mode 0600, creating its directory", (t) => {
  const file = tempPath(t, "etc", "keygate", "keystore.yaml");
  writeStarterKeystore(file);
  t.is(statSync(file).mode & 0o777, 0o600);
});

test("the written keystore is valid in enforce mode and holds only the token's digest", (t) => {
  const file = tempPath(t, "keystore.yaml");
  const { token } = writeStarterKeystore(file);
  t.true(token.startsWith("kg_"));
  t.true(hasValidChecksum(token));
  const { keystore } = readKeystoreFile(file, ENFORCE);
  t.is(keystore.clients.length, 1);
  t.like(keystore.clients[0], { id: "demo", kind: "client", disabled: false, upstreamKey: null });
  t.deepEqual(keystore.clients[0]?.tokens, [{ digest: hashToken(token), expiresAt: null }]);
  t.false(readFileSync(file, "utf8").includes(token), "the token itself is never written");
});

test("refuses to overwrite an existing keystore and leaves it untouched", (t) => {
  const file = tempPath(t, "keystore.yaml");
  writeFileSync(file, "operator's own keystore\n");
  t.throws(() => writeStarterKeystore(file), {
    message: /already exists; keygate never overwrites/,
  });
  t.is(readFileSync(file, "utf8"), "operator's own keystore\n");
});

test("a second init does not replace the first token", (t) => {
  const file = tempPath(t, "keystore.yaml");
  const { token } = writeStarterKeystore(file);
  t.throws(() => writeStarterKeystore(file));
  t.is(readKeystoreFile(file, ENFORCE).keystore.clients[0]?.tokens[0]?.digest, hashToken(token));
});

test("the modeline points editors at the shipped schema, wherever the keystore lives", (t) => {
  const file = tempPath(t, "deep", "config", "keystore.yaml");
  writeStarterKeystore(file);
  const schemaRef = MODELINE.exec(readFileSync(file, "utf8"))?.[1] ?? "";
  t.true(existsSync(path.resolve(path.dirname(file), schemaRef)), schemaRef);
  t.true(schemaRef.endsWith("schemas/keystore.schema.json"));
});

test("starterKeystoreText is valid YAML for the given digest, with the project-root modeline", (t) => {
  const digest = hashToken("some token");
  const text = starterKeystoreText(digest);
  t.is(MODELINE.exec(text)?.[1], "./schemas/keystore.schema.json");
  const loaded = parseKeystore(text, { file: "keystore.yaml", ...ENFORCE });
  t.is(loaded.keystore.clients[0]?.tokens[0]?.digest, digest);
  t.deepEqual(loaded.warnings, []);
});

test("starterKeystoreText shows where the optional fields go", (t) => {
  const text = starterKeystoreText(hashToken("x"));
  for (const field of [
    "upstream_key:",
    "routes:",
    "models:",
    "expires:",
    "kind:",
    "budget:",
    "defaults:",
  ]) {
    t.regex(text, new RegExp(`#\\s*${field}`), field);
  }
});

test("starterKeystoreText refuses anything but a digest, so a raw token is never written", (t) => {
  t.throws(() => starterKeystoreText("kg_not-a-digest"), { message: /SHA-256 digest/ });
});
