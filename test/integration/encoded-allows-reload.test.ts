/**
 * The Check handler reuses an encoded allow within a keystore generation
 * (server/grpc/encoded-allows.ts). A reload must show in the very next Check: a new
 * upstream key, a disabled client, and a new generation number even when nothing about
 * the client changed.
 */
import { writeFileSync } from "node:fs";
import test from "ava";
import type { CheckResponse } from "../../server/auth/build-response.js";
import { hashToken } from "../../server/crypto/token-hash.js";
import { checkServiceOn } from "../helpers/check-service.js";
import { deserializeCheckResponse, serializeCheckRequest } from "../helpers/envoy-protos.js";

const TOKEN = "kg-allow-cache-token";

function keystoreText(upstream: string, disabled = false, other = ""): string {
  return `version: 1
clients:${other}
  - id: cached
    tokens:
      - sha256: ${hashToken(TOKEN)}
    upstream_key: env:${upstream}
${disabled ? "    disabled: true\n" : ""}`;
}

test("a reload's new key, generation and disabled client show in the next Check", async (t) => {
  const { service, keystore, keystorePath, close } = await checkServiceOn(keystoreText("KEY_A"), {
    KEY_A: "sk-ant-first-key",
    KEY_B: "sk-ant-second-key",
  });
  t.teardown(close);
  const request = serializeCheckRequest({
    attributes: {
      request: {
        http: {
          method: "POST",
          path: "/v1/messages",
          headers: { authorization: `Bearer ${TOKEN}` },
        },
      },
    },
  });
  const check = () => {
    const framed = service(request);
    if (framed instanceof Promise) throw new Error("answered asynchronously");
    const response = deserializeCheckResponse(framed.subarray(5)) as unknown as CheckResponse;
    const headers = Object.fromEntries(
      (response.ok_response?.headers ?? []).map(({ header }) => [header.key, header.value]),
    );
    const generation = response.dynamic_metadata?.fields.keystore_generation;
    return {
      code: response.status.code,
      key: headers["x-api-key"],
      generation: generation && "numberValue" in generation ? generation.numberValue : undefined,
    };
  };

  const first = { code: 0, key: "sk-ant-first-key", generation: 1 };
  t.deepEqual(check(), first);
  t.deepEqual(check(), first);

  // Another client added: this client's allow is the same but for the generation.
  const other = `\n  - id: other\n    tokens: []`;
  writeFileSync(keystorePath, keystoreText("KEY_A", false, other));
  t.is((await keystore.reload()).result, "applied");
  t.deepEqual(check(), { ...first, generation: 2 });

  writeFileSync(keystorePath, keystoreText("KEY_B", false, other));
  t.is((await keystore.reload()).result, "applied");
  t.deepEqual(check(), { code: 0, key: "sk-ant-second-key", generation: 3 });

  writeFileSync(keystorePath, keystoreText("KEY_B", true, other));
  t.is((await keystore.reload()).result, "applied");
  t.like(check(), { code: 16, key: undefined });
});
