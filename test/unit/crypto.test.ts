import { execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";
import test from "ava";
import fc from "fast-check";
import {
  decryptSecret,
  encryptSecret,
  generateMasterKey,
  parseMasterKeys,
} from "../../server/crypto/aes-gcm.js";
import {
  hasValidChecksum,
  MINTED_TOKEN_LENGTH,
  mintToken,
} from "../../server/crypto/token-format.js";
import { hashToken } from "../../server/crypto/token-hash.js";

interface Vector {
  name: string;
  token: string;
  sha256: string;
}
const { vectors } = JSON.parse(
  readFileSync(new URL("../../schemas/token-hash-vectors.json", import.meta.url), "utf8"),
) as {
  vectors: Vector[];
};

for (const vector of vectors) {
  test(`hash vector: ${vector.name}`, (t) => t.is(hashToken(vector.token), vector.sha256));
}

test("hash vectors agree with an independent implementation (Python hashlib)", (t) => {
  const script =
    "import hashlib,json,sys\nfor v in json.load(sys.stdin): print(hashlib.sha256(v.strip().encode('utf-8')).hexdigest())";
  const output = execFileSync("python3", ["-c", script], {
    input: JSON.stringify(vectors.map((v) => v.token)),
  }).toString();
  t.deepEqual(
    output.trim().split("\n"),
    vectors.map((v) => v.sha256),
  );
});

test("hashes are lowercase hex of 64 characters", (t) => {
  fc.assert(fc.property(fc.string(), (token) => /^[0-9a-f]{64}$/.test(hashToken(token))));
  t.pass();
});

test("minted tokens have the documented shape and a valid checksum", (t) => {
  for (let i = 0; i < 200; i++) {
    const token = mintToken();
    t.is(token.length, MINTED_TOKEN_LENGTH);
    t.regex(token, /^kg_[A-Za-z0-9_-]{43}[0-9A-Za-z]{6}$/);
    t.true(hasValidChecksum(token));
  }
});

test("a single changed character in a minted token fails the checksum", (t) => {
  const token = mintToken();
  for (let i = 3; i < token.length; i++) {
    const replacement = token[i] === "A" ? "B" : "A";
    t.false(
      hasValidChecksum(token.slice(0, i) + replacement + token.slice(i + 1)),
      `position ${i}`,
    );
  }
});

test("kg_ tokens of the wrong shape fail; tokens hashed by hand pass the checksum step", (t) => {
  t.false(hasValidChecksum("kg_short"));
  t.false(hasValidChecksum(`${mintToken()}x`));
  t.true(hasValidChecksum("password"));
  t.true(hasValidChecksum("sk-ant-api03-abc"));
});

const KEY = parseMasterKeys(generateMasterKey("k1"));

test("enc values round-trip for the client they were made for", (t) => {
  const key = KEY.get("k1") as Buffer;
  const value = encryptSecret("sk-ant-secret", "lightning-prod", "k1", key);
  t.regex(value, /^enc:v1:k1:[A-Za-z0-9+/]+=*$/);
  t.deepEqual(decryptSecret(value, "lightning-prod", KEY), {
    ok: true,
    value: "sk-ant-secret",
    kid: "k1",
  });
});

test("an enc value copied onto another client does not decrypt (client id is the AAD)", (t) => {
  const value = encryptSecret("sk-ant-secret", "a", "k1", KEY.get("k1") as Buffer);
  t.like(decryptSecret(value, "b", KEY), { ok: false, why: "auth_failed" });
});

test("unknown kid, tampering and malformed values fail closed", (t) => {
  const value = encryptSecret("sk-ant-secret", "a", "k1", KEY.get("k1") as Buffer);
  t.like(decryptSecret(value.replace("enc:v1:k1:", "enc:v1:k2:"), "a", KEY), {
    ok: false,
    why: "unknown_kid",
  });
  const body = Buffer.from(value.split(":")[3] as string, "base64");
  body.writeUInt8((body.at(-1) ?? 0) ^ 1, body.length - 1);
  t.like(decryptSecret(`enc:v1:k1:${body.toString("base64")}`, "a", KEY), {
    ok: false,
    why: "auth_failed",
  });
  t.like(decryptSecret("enc:v1:k1:AAAA", "a", KEY), { ok: false, why: "malformed" });
  t.like(decryptSecret("env:FOO", "a", KEY), { ok: false, why: "malformed" });
});

test("several master keys load at once for rotation", (t) => {
  const keys = parseMasterKeys(`${generateMasterKey("old")},${generateMasterKey("new")}`);
  t.deepEqual([...keys.keys()], ["old", "new"]);
});

test("bad master key specs are rejected without echoing key material", (t) => {
  const secret = Buffer.alloc(16, 7).toString("base64");
  const error = t.throws(() => parseMasterKeys(`k1:${secret}`));
  t.regex(error?.message ?? "", /32 bytes/);
  t.false(error?.message.includes(secret));
  t.throws(() => parseMasterKeys("nokid"), { message: /kid:base64/ });
  t.throws(() => parseMasterKeys(""), { message: /no key/ });
  const k = generateMasterKey("k1");
  t.throws(() => parseMasterKeys(`${k},${k}`), { message: /twice/ });
});
