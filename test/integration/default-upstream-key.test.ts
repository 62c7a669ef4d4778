/**
 * defaults.upstream_key held encrypted: bound to DEFAULTS_AAD rather than to any one
 * client, so every client without a key of its own can use it.
 */
import test from "ava";
import { encryptSecret, generateMasterKey, parseMasterKeys } from "../../server/crypto/aes-gcm.js";
import { hashToken } from "../../server/crypto/token-hash.js";
import { DEFAULTS_AAD } from "../../server/keystore/format/model.js";
import { checkRequest } from "../helpers/check-request.js";
import { denialOf, setHeaders } from "../helpers/grpc-client.js";
import { startTestKeygate } from "../helpers/keygate-in-process.js";

const MASTER = generateMasterKey("k1");
const KEY = parseMasterKeys(MASTER).get("k1") as Buffer;

function keystore(defaultKey: string): string {
  return `version: 1
defaults:
  upstream_key: ${defaultKey}
clients:
  - id: one
    tokens: [{ sha256: ${hashToken("token-one")} }]
  - id: two
    tokens: [{ sha256: ${hashToken("token-two")} }]
`;
}

test("an enc: default bound to DEFAULTS_AAD serves every client without its own key", async (t) => {
  const kg = await startTestKeygate({
    keystore: keystore(encryptSecret("sk-ant-shared-default", DEFAULTS_AAD, "k1", KEY)),
    env: { KEYGATE_MASTER_KEY: MASTER },
  });
  try {
    for (const [token, id] of [
      ["token-one", "one"],
      ["token-two", "two"],
    ]) {
      const response = await kg.client.check(
        checkRequest({ json: { model: "m" }, headers: { authorization: `Bearer ${token}` } }),
      );
      t.deepEqual(setHeaders(response), {
        "x-api-key": "sk-ant-shared-default",
        "x-client-id": id,
      });
    }
  } finally {
    await kg.stop();
  }
});

test("an enc: default bound to one client's id is not accepted as the shared default", async (t) => {
  const kg = await startTestKeygate({
    keystore: keystore(encryptSecret("sk-ant-bound-to-one", "one", "k1", KEY)),
    env: { KEYGATE_MASTER_KEY: MASTER },
  });
  try {
    const response = await kg.client.check(
      checkRequest({ json: { model: "m" }, headers: { authorization: "Bearer token-one" } }),
    );
    t.like(denialOf(response), { type: "KEY_UNAVAILABLE", status: 503 });
  } finally {
    await kg.stop();
  }
});
