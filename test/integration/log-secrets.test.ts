/**
 * No secret ever reaches a log line: traffic over every allow and denial path, a reload
 * that adds and revokes tokens, and invalid edits (one with a key pasted in clear), at
 * debug level; then every captured line is searched for tokens, full digests, upstream
 * keys and master key material.
 */
import { writeFileSync } from "node:fs";
import test from "ava";
import { encryptSecret, generateMasterKey, parseMasterKeys } from "../../server/crypto/aes-gcm.js";
import { hashToken } from "../../server/crypto/token-hash.js";
import { basic, checkRequest, type RequestSpec } from "../helpers/check-request.js";
import { startTestKeygate } from "../helpers/keygate-in-process.js";

const MASTER = generateMasterKey("k1");
const KEY = parseMasterKeys(MASTER).get("k1") as Buffer;
const TOKENS = ["kg-log-token-alpha", "kg-log-token-beta", "kg-log-token-gamma-new"] as const;
const UPSTREAM_ENV = "sk-ant-log-upstream-from-env";
const UPSTREAM_ENC = "sk-ant-log-upstream-encrypted";
const PASTED_IN_CLEAR = "sk-ant-pasted-in-clear-by-mistake";
const FOREIGN = ["kg-log-unknown-token", "sk-ant-log-byo-key", "kg-log-conflict"];

function keystore(tokens: readonly string[], extra = ""): string {
  return `version: 1
clients:
  - id: alpha
    tokens: [{ sha256: ${hashToken(tokens[0] ?? "")} }]
    upstream_key: env:LOG_UPSTREAM
  - id: beta
    tokens: [{ sha256: ${hashToken(tokens[1] ?? "")} }]
    upstream_key: ${encryptSecret(UPSTREAM_ENC, "beta", "k1", KEY)}
    routes: [/services/]
${extra}`;
}

test("no token, full digest, upstream key or master key appears in any log line", async (t) => {
  const kg = await startTestKeygate({
    keystore: keystore(TOKENS),
    env: { KEYGATE_MASTER_KEY: MASTER, LOG_UPSTREAM: UPSTREAM_ENV },
  });
  try {
    const json = { model: "claude-sonnet-4", messages: [] };
    const requests: RequestSpec[] = [
      ...TOKENS.flatMap((token): RequestSpec[] => [
        { json: { ...json, api_key: token } },
        { json, headers: { authorization: `Bearer ${token}` } },
        { json, headers: { "x-api-key": token } },
        { json, headers: { authorization: basic("user", token) } },
        { path: "/admin", json, headers: { authorization: `Bearer ${token}` } },
      ]),
      ...FOREIGN.map((token) => ({ json, headers: { authorization: `Bearer ${token}` } })),
      { json: { ...json, api_key: FOREIGN[2] }, headers: { "x-api-key": TOKENS[0] } },
      {
        json: { ...json, api_key: "sk-ant-log-byo-key" },
        contextExtensions: { keygate_mode: "recognize" },
      },
      {
        json,
        headers: { authorization: "Bearer kg-log-unknown-token" },
        contextExtensions: { keygate_mode: "dry-run" },
      },
    ];
    for (const spec of requests) await kg.client.check(checkRequest(spec));

    // A reload that revokes alpha's token and adds gamma's; then invalid edits.
    writeFileSync(kg.keystorePath, keystore([TOKENS[2], TOKENS[1]]));
    // The watcher may have reloaded already; either way the state afterwards is what counts.
    await kg.running.reload();
    t.false(kg.running.keystore.status().stale);
    writeFileSync(
      kg.keystorePath,
      keystore(
        TOKENS,
        `  - id: pasted\n    tokens: [{ sha256: ${hashToken("x")} }]\n    upstream_key: ${PASTED_IN_CLEAR}\n`,
      ),
    );
    await kg.running.reload();
    t.true(kg.running.keystore.status().stale);
    writeFileSync(
      kg.keystorePath,
      `${keystore(TOKENS)}  - id: dup\n    tokens: [{ sha256: ${hashToken(TOKENS[0])} }]\n`,
    );
    await kg.running.reload();
    t.true(kg.running.keystore.status().stale);
    for (const spec of requests.slice(0, 5)) await kg.client.check(checkRequest(spec));
  } finally {
    await kg.stop();
  }

  const secrets = [
    ...TOKENS,
    ...FOREIGN,
    ...[...TOKENS, ...FOREIGN].map(hashToken),
    UPSTREAM_ENV,
    UPSTREAM_ENC,
    PASTED_IN_CLEAR,
    MASTER.split(":")[1] as string,
  ];
  const decisionLines = kg.logs.filter((line) => line.includes('"result":')).length;
  t.true(
    decisionLines >= 26,
    `every check is logged at debug; got ${decisionLines} decision lines`,
  );
  t.true(
    kg.logs.some((line) => line.includes('"digest_prefix"')),
    "decision lines carry a digest prefix",
  );
  for (const line of kg.logs) {
    for (const secret of secrets) {
      t.false(
        line.toLowerCase().includes(secret.toLowerCase()),
        `log line leaks a secret: ${line.slice(0, 200)}`,
      );
    }
  }
});
