/**
 * The Check path's last word on an upstream key (UpstreamKeyResolver) and the rules it
 * shares with the loader and the CLI (upstream-key-rules): a key that cannot be a header
 * value, or that comes from keygate's own settings or from outside
 * KEYGATE_UPSTREAM_ENV_PREFIX, is "unavailable" (the Check answers 503 KEY_UNAVAILABLE).
 */
import { createHash } from "node:crypto";
import test from "ava";
import { encryptSecret } from "../../server/crypto/aes-gcm.js";
import {
  envNameProblem,
  upstreamKeyValueProblem,
} from "../../server/keystore/format/upstream-key-rules.js";
import { UpstreamKeyResolver } from "../../server/keystore/store/upstream-keys.js";

const K1 = createHash("sha256").update("keygate test master key k1").digest();
const MASTER_KEYS = new Map([["k1", K1]]);
const ENV = {
  KEYGATE_MASTER_KEY: `k1:${K1.toString("base64")}`,
  keygate_master_key: "sk-ant-lower-case-twin",
  ANTHROPIC_API_KEY: "sk-ant-plain",
  APOLLO_KEY: "sk-ant-apollo",
  CONTROL_KEY: "sk-ant-\x01",
  PADDED_KEY: " sk-ant-padded\n",
};

interface ResolveCase {
  readonly name: string;
  readonly reference: string;
  readonly prefix?: string;
  /** The key sent, or undefined for "unavailable". */
  readonly value: string | undefined;
}

const sealed = (plain: string) => encryptSecret(plain, "client-a", "k1", K1);

const CASES: readonly ResolveCase[] = [
  { name: "an env: key", reference: "env:ANTHROPIC_API_KEY", value: "sk-ant-plain" },
  { name: "an enc: key", reference: sealed("sk-ant-sealed"), value: "sk-ant-sealed" },
  {
    name: "obs-text is sent as it is",
    reference: sealed("sk-ant-caf\u00E9"),
    value: "sk-ant-caf\u00E9",
  },
  { name: "the master key, by env:", reference: "env:KEYGATE_MASTER_KEY", value: undefined },
  { name: "a KEYGATE_ name in lower case", reference: "env:keygate_master_key", value: undefined },
  {
    name: "a name outside the prefix",
    reference: "env:ANTHROPIC_API_KEY",
    prefix: "APOLLO_",
    value: undefined,
  },
  {
    name: "a name with the prefix",
    reference: "env:APOLLO_KEY",
    prefix: "APOLLO_",
    value: "sk-ant-apollo",
  },
  { name: "a control byte from env:", reference: "env:CONTROL_KEY", value: undefined },
  { name: "whitespace around an env: key", reference: "env:PADDED_KEY", value: undefined },
  { name: "a control byte from enc:", reference: sealed("sk-ant-\x01x"), value: undefined },
  { name: "NUL from enc:", reference: sealed("sk-ant-x\0"), value: undefined },
  { name: "CR LF from enc:", reference: sealed("sk-ant-x\r\nx-injected: 1"), value: undefined },
  { name: "a tab from enc:", reference: sealed("sk-ant-\tx"), value: undefined },
  { name: "DEL from enc:", reference: sealed("sk-ant-x\x7F"), value: undefined },
  { name: "a space inside, from enc:", reference: sealed("sk-ant x"), value: undefined },
  {
    name: "a character beyond U+00FF from enc:",
    reference: sealed("sk-ant-\u2028"),
    value: undefined,
  },
  { name: "a trailing newline from enc:", reference: sealed("sk-ant-x\n"), value: undefined },
  { name: "an empty enc:", reference: sealed(""), value: undefined },
  { name: "an unset variable", reference: "env:UNSET", value: undefined },
];

for (const { name, reference, prefix, value } of CASES) {
  test(`resolve: ${name}`, (t) => {
    const resolver = new UpstreamKeyResolver(MASTER_KEYS, ENV, prefix ?? null);
    const expected = value === undefined ? { kind: "unavailable" } : { kind: "value", value };
    t.deepEqual(resolver.resolve(reference, "client-a"), expected);
    t.deepEqual(resolver.resolve(reference, "client-a"), expected, "memoised alike");
  });
}

test("resolve: no reference is no key, and the prefix defaults to none", (t) => {
  const resolver = new UpstreamKeyResolver(MASTER_KEYS, ENV);
  t.deepEqual(resolver.resolve(null, "client-a"), { kind: "none" });
  t.deepEqual(resolver.resolve("env:ANTHROPIC_API_KEY", "client-a"), {
    kind: "value",
    value: "sk-ant-plain",
  });
  t.deepEqual(resolver.resolve("env:KEYGATE_MASTER_KEY", "client-a"), { kind: "unavailable" });
});

test("rules: the characters a header value may carry", (t) => {
  const sendable = ["a", "sk-ant-api03-AZaz09_-", "!~", "\x21\x7E\x80\xFF"];
  for (const value of sendable)
    t.is(upstreamKeyValueProblem(value), undefined, JSON.stringify(value));
  const problems: ReadonlyArray<readonly [string, string]> = [
    ["", "is empty"],
    [" \t\n", "is empty"],
    [" a", "has whitespace"],
    ["a\n", "has whitespace"],
    ["a\u00A0", "has whitespace"],
    ["a b", "holds a character"],
    ["a\x00b", "holds a character"],
    ["a\x01b", "holds a character"],
    ["a\x1Fb", "holds a character"],
    ["a\x7Fb", "holds a character"],
    ["a\u0100", "holds a character"],
    ["a\uFFFD", "holds a character"],
  ];
  for (const [value, problem] of problems) {
    t.true(upstreamKeyValueProblem(value)?.startsWith(problem), JSON.stringify(value));
  }
});

test("rules: env: names", (t) => {
  t.is(envNameProblem("ANTHROPIC_API_KEY", null), undefined);
  t.is(envNameProblem("APOLLO_KEY", "APOLLO_"), undefined);
  t.regex(envNameProblem("KEYGATE_MASTER_KEY", null) ?? "", /keygate's own settings/);
  t.regex(envNameProblem("Keygate_Master_Key_File", null) ?? "", /keygate's own settings/);
  t.regex(envNameProblem("KEYGATE_X", "KEYGATE_") ?? "", /keygate's own settings/);
  t.regex(envNameProblem("OTHER", "APOLLO_") ?? "", /must start with APOLLO_/);
});
