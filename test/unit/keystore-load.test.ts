import { createHash } from "node:crypto";
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import test from "ava";
import { ENC_PATTERN, encryptSecret, type MasterKeys } from "../../server/crypto/aes-gcm.js";
import {
  decodeKeystoreText,
  type LoadOptions,
  parseKeystore,
  readKeystoreBytes,
  readKeystoreFile,
  readKeystoreText,
} from "../../server/keystore/format/load.js";
import {
  DEFAULTS_AAD,
  formatIssue,
  type Keystore,
  KeystoreError,
} from "../../server/keystore/format/model.js";
import type { SealedKeyChecks } from "../../server/keystore/format/upstream-key-warnings.js";

const FIXTURES = fileURLToPath(new URL("../fixtures/keystores/", import.meta.url));
const SCHEMA_FILE = fileURLToPath(new URL("../../schemas/keystore.schema.json", import.meta.url));
/** The master key the fixtures' enc: values were made with (see valid-full.yaml). */
const K1 = createHash("sha256").update("keygate test master key k1").digest();
const LIGHTNING_KEY_PLAINTEXT = "sk-ant-test-lightning";
const FULL_ENV = { ANTHROPIC_API_KEY: "sk-ant-default", BATCH_KEY: "sk-ant-batch" };

function options(overrides: Partial<LoadOptions> = {}): LoadOptions {
  return {
    file: "keystore.yaml",
    masterKeys: new Map([["k1", K1]]),
    env: FULL_ENV,
    requireClients: true,
    ...overrides,
  };
}

function fixture(name: string): string {
  return path.join(FIXTURES, name);
}

function loadFixture(name: string, overrides: Partial<LoadOptions> = {}) {
  const { file: _file, ...rest } = options(overrides);
  return readKeystoreFile(fixture(name), rest);
}

function issuesOf(fn: () => unknown): string[] {
  try {
    fn();
  } catch (error) {
    if (error instanceof KeystoreError) return error.issues.map(formatIssue);
    throw error;
  }
  throw new Error("expected a KeystoreError");
}

// ---------------------------------------------------------------- invalid fixtures

interface InvalidCase {
  readonly name: string;
  readonly fixture: string;
  /** Every issue expected, in order: `line:column` and a fragment of the message. */
  readonly issues: ReadonlyArray<readonly [position: string, fragment: string]>;
}

const INVALID_CASES: readonly InvalidCase[] = [
  {
    name: "YAML syntax error is located where the parser stopped",
    fixture: "invalid-yaml-syntax.yaml",
    issues: [["6:1", "YAML: tab characters must not be used in indentation"]],
  },
  {
    name: "a misindented key is located at the key",
    fixture: "invalid-yaml-indentation.yaml",
    issues: [["6:6", "YAML: bad indentation of a mapping entry"]],
  },
  {
    name: "version other than 1",
    fixture: "invalid-version.yaml",
    issues: [["1:10", "version: must be 1"]],
  },
  {
    name: "missing version",
    fixture: "invalid-missing-version.yaml",
    issues: [["1:1", "version: is required"]],
  },
  {
    name: "digest that is not 64 hex characters",
    fixture: "invalid-digest.yaml",
    issues: [["5:17", "clients[0].tokens[0].sha256: must be 64 hexadecimal characters"]],
  },
  {
    name: "client id outside the allowed pattern",
    fixture: "invalid-id.yaml",
    issues: [["3:9", "clients[0].id: must be 1-64 characters of a-z, 0-9"]],
  },
  {
    name: "duplicate client id names the first use",
    fixture: "invalid-duplicate-id.yaml",
    issues: [
      ["6:9", 'clients[1].id: duplicate client id "demo" (already used by clients[0] at line 3)'],
    ],
  },
  {
    name: "digest shared by two clients names both (case-insensitively)",
    fixture: "invalid-duplicate-digest.yaml",
    issues: [
      [
        "10:17",
        'clients[1].tokens[1].sha256: digest 5e884898da28… of client "beta" already belongs to client "alpha" (clients[0].tokens[0])',
      ],
    ],
  },
  {
    name: "digest listed twice for one client",
    fixture: "invalid-duplicate-digest-same-client.yaml",
    issues: [["6:17", 'is listed twice for client "alpha" (also clients[0].tokens[0])']],
  },
  {
    name: "expires that is a date without a time",
    fixture: "invalid-expires.yaml",
    issues: [["6:18", "clients[0].tokens[0].expires: must be an RFC 3339 date-time"]],
  },
  {
    name: "enc: value that is not base64",
    fixture: "invalid-enc-malformed.yaml",
    issues: [["6:19", "clients[0].upstream_key: must be enc:v1:<kid>:<base64> or env:VAR"]],
  },
  {
    name: "enc: value too short to be a ciphertext",
    fixture: "invalid-enc-truncated.yaml",
    issues: [["6:19", "clients[0].upstream_key: the enc: value is too short"]],
  },
  {
    name: "upstream key with CR/LF",
    fixture: "invalid-upstream-key-crlf.yaml",
    issues: [["6:19", "clients[0].upstream_key: must not contain a line break"]],
  },
  {
    name: "empty upstream key",
    fixture: "invalid-upstream-key-empty.yaml",
    issues: [["6:19", "clients[0].upstream_key: must not be empty"]],
  },
  {
    name: "provider key pasted in clear",
    fixture: "invalid-upstream-key-clear.yaml",
    issues: [
      [
        "3:17",
        "defaults.upstream_key: must be enc:v1:<kid>:<base64> or env:VAR, never a key in clear",
      ],
    ],
  },
  {
    name: "unknown field points at its key and lists the allowed ones",
    fixture: "invalid-unknown-field.yaml",
    issues: [
      ["6:5", "clients[0].route: unknown field (allowed: id, name, tokens, upstream_key, routes"],
    ],
  },
  {
    name: "empty clients in enforce mode",
    fixture: "invalid-empty-clients.yaml",
    issues: [
      ["4:10", "clients: is empty: in enforce mode an empty keystore would deny every request"],
    ],
  },
  {
    name: "kind outside the enum",
    fixture: "invalid-kind.yaml",
    issues: [["6:11", "clients[0].kind: must be one of: client, internal"]],
  },
  {
    name: "route that does not start with /",
    fixture: "invalid-route.yaml",
    issues: [["8:9", "clients[0].routes[1]: must be a path prefix starting with /"]],
  },
  {
    name: "every problem is reported, top to bottom",
    fixture: "invalid-many-problems.yaml",
    issues: [
      ["6:17", "clients[0].tokens[0].sha256: must be 64 hexadecimal characters"],
      ["7:9", 'clients[1].id: duplicate client id "alpha"'],
      ["10:14", "clients[1].models[0]: must not be empty"],
      ["11:15", "clients[1].disabled: must be true or false"],
    ],
  },
];

for (const { name, fixture: file, issues } of INVALID_CASES) {
  test(`invalid keystore: ${name}`, (t) => {
    const reported = issuesOf(() => loadFixture(file));
    t.is(reported.length, issues.length, reported.join("\n"));
    issues.forEach(([position, fragment], index) => {
      const issue = reported[index] ?? "";
      t.true(issue.startsWith(`${fixture(file)}:${position}: `), issue);
      t.true(issue.includes(fragment), issue);
    });
  });
}

test("every invalid-*.yaml fixture has a case in the table", (t) => {
  const covered = new Set(INVALID_CASES.map((c) => c.fixture));
  const fixtures = readdirSync(FIXTURES).filter((name) => name.startsWith("invalid-"));
  t.deepEqual(
    fixtures.filter((name) => !covered.has(name)),
    [],
  );
});

test("an empty clients list is valid when clients are not required", (t) => {
  const loaded = loadFixture("invalid-empty-clients.yaml", { requireClients: false });
  t.deepEqual(loaded.keystore.clients, []);
  t.is(loaded.keystore.defaultUpstreamKey, "env:ANTHROPIC_API_KEY");
});

test("an empty file says what is expected", (t) => {
  t.deepEqual(
    issuesOf(() => parseKeystore("", options())),
    ["keystore.yaml:1:1: keystore: is empty; expected a mapping"],
  );
});

test("duplicate YAML keys are a located syntax error", (t) => {
  const text = "version: 1\nversion: 1\nclients: []\n";
  const [issue] = issuesOf(() => parseKeystore(text, options({ requireClients: false })));
  t.is(issue, "keystore.yaml:2:1: YAML: duplicated mapping key");
});

test("a missing file is one issue at line 1, column 1", (t) => {
  const missing = fixture("does-not-exist.yaml");
  const expected = [`${missing}:1:1: cannot read the keystore: no such file`];
  t.deepEqual(
    issuesOf(() => loadFixture("does-not-exist.yaml")),
    expected,
  );
  t.deepEqual(
    issuesOf(() => readKeystoreBytes(missing)),
    expected,
  );
});

// ---------------------------------------------------------------- reading the file

function tempFile(t: import("ava").ExecutionContext, bytes: Uint8Array): string {
  const dir = mkdtempSync(path.join(tmpdir(), "keygate-load-"));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const file = path.join(dir, "keystore.yaml");
  writeFileSync(file, bytes);
  return file;
}

const NOT_UTF8 = "cannot read the keystore: the file is not valid UTF-8 (save it as UTF-8)";
const BOM_BYTES = [0xef, 0xbb, 0xbf];
const ascii = (text: string) => [...Buffer.from(text, "latin1")];

interface Utf8Case {
  readonly name: string;
  readonly bytes: readonly number[];
  /** `line:column` of the first byte that is not UTF-8, as an editor counts characters. */
  readonly at: string;
}

const NOT_UTF8_CASES: readonly Utf8Case[] = [
  { name: "a Latin-1 byte", bytes: [...ascii("ver"), 0xff, 0xfe, 0x0a], at: "1:4" },
  {
    name: "after multi-byte characters on a later line",
    bytes: [...ascii("version: 1\nname: "), 0xc3, 0xa9, 0xe2, 0x82, 0xac, 0xe9, 0x0a],
    at: "2:9",
  },
  {
    name: "after a U+FFFD the file really holds",
    bytes: [...ascii("name: "), 0xef, 0xbf, 0xbd, 0x20, 0x80, 0x0a],
    at: "1:9",
  },
  { name: "an overlong encoding of NUL", bytes: [...ascii("a: "), 0xc0, 0x80], at: "1:4" },
  { name: "an encoded surrogate", bytes: [...ascii("a: "), 0xed, 0xa0, 0x80], at: "1:4" },
  { name: "a sequence cut short at the end", bytes: [...ascii("a: b"), 0xe2, 0x82], at: "1:5" },
  {
    name: "after a BOM, which is not a column",
    bytes: [...BOM_BYTES, ...ascii("ab"), 0xff],
    at: "1:3",
  },
];

for (const { name, bytes, at } of NOT_UTF8_CASES) {
  test(`a file that is not UTF-8 is refused where it stops being UTF-8: ${name}`, (t) => {
    const file = tempFile(t, Buffer.from(bytes));
    const expected = [`${file}:${at}: ${NOT_UTF8}`];
    t.deepEqual(
      issuesOf(() => readKeystoreText(file)),
      expected,
    );
    t.deepEqual(
      issuesOf(() => decodeKeystoreText(Buffer.from(bytes), file)),
      expected,
      "bytes read and hashed first decode alike",
    );
    const { file: _ignored, ...rest } = options();
    t.deepEqual(
      issuesOf(() => readKeystoreFile(file, rest)),
      expected,
      "the loader reads through readKeystoreText",
    );
  });
}

test("readKeystoreText drops a BOM, keeps a U+FFFD the file holds, and hashes the bytes", (t) => {
  const bytes = Buffer.concat([
    Buffer.from(BOM_BYTES),
    Buffer.from("version: 1\n# caf\u00e9 \ufffd\n", "utf8"),
  ]);
  const file = tempFile(t, bytes);
  const { text, sourceSha256 } = readKeystoreText(file);
  t.is(text, "version: 1\n# caf\u00e9 \ufffd\n");
  t.is(sourceSha256, createHash("sha256").update(bytes).digest("hex"));
});

test("a directory is one issue at line 1, column 1", (t) => {
  const dir = mkdtempSync(path.join(tmpdir(), "keygate-load-"));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  t.deepEqual(
    issuesOf(() => readKeystoreText(dir)),
    [`${dir}:1:1: cannot read the keystore: it is a directory, not a file`],
  );
});

test("positions do not count a BOM as a column, from disk or from text", (t) => {
  const text = `version: 2\nclients: []\n`;
  const file = tempFile(t, Buffer.concat([Buffer.from(BOM_BYTES), Buffer.from(text)]));
  const { file: _ignored, ...rest } = options();
  const fromDisk = issuesOf(() => readKeystoreFile(file, rest));
  t.true(fromDisk[0]?.startsWith(`${file}:1:10: version: must be 1`), fromDisk[0]);
  const fromText = issuesOf(() => parseKeystore(`\ufeff${text}`, options()));
  t.true(fromText[0]?.startsWith("keystore.yaml:1:10: version: must be 1"), fromText[0]);
});

// ---------------------------------------------------------------- valid keystore

const FULL_MODEL: Keystore = {
  version: 1,
  defaultUpstreamKey: "env:ANTHROPIC_API_KEY",
  clients: [
    {
      id: "lightning-prod",
      name: "Lightning production",
      kind: "client",
      disabled: false,
      tokens: [
        {
          digest: "5e884898da28047151d0e56f8dc6292773603d0d6aabbdd62a11ef721d1542d8",
          expiresAt: Date.parse("2026-12-01T00:00:00Z"),
        },
        {
          digest: "d0ab1cea494423ce7fa6cb3cacf7d88d5ae342a923991ecfb69028923b0837af",
          expiresAt: null,
        },
      ],
      upstreamKey: "enc:v1:k1:6RAKzK9viGyfbK9jOjEPwzqBz0Gi1brDLTHqe7qFG5RHyh3xUIkMz586AbRZLOx15Q==",
      routes: ["/services/", "/v1/messages"],
      models: ["claude-sonnet-*", "claude-haiku-4"],
    },
    {
      id: "batch.jobs_2",
      name: null,
      kind: "client",
      disabled: true,
      tokens: [
        {
          digest: "ca0dae384e350e2413672bd9362e48ba9ae10ed440e09d40091ed66c7a1b19c8",
          expiresAt: Date.parse("2027-01-01T10:30:00.500Z"),
        },
      ],
      upstreamKey: "env:BATCH_KEY",
      routes: null,
      models: null,
    },
    {
      id: "health-checker",
      name: "Internal health checks",
      kind: "internal",
      disabled: false,
      tokens: [
        {
          digest: "4306c8162bdeb32f848c5cfabe0bc52ff088aea61f992fe47004880cc27688bf",
          expiresAt: null,
        },
      ],
      upstreamKey: null,
      routes: null,
      models: null,
    },
    {
      id: "fallback",
      name: null,
      kind: "client",
      disabled: false,
      tokens: [
        {
          digest: "a9ece14f7f3c7ebb6ff13fdb26fcaba5449d11bddaeb061041758f6fc46abdaa",
          expiresAt: null,
        },
      ],
      upstreamKey: null,
      routes: null,
      models: null,
    },
  ],
};

test("the full valid fixture converts to the model, without warnings", (t) => {
  const loaded = loadFixture("valid-full.yaml");
  t.deepEqual(loaded.keystore, FULL_MODEL);
  t.deepEqual(loaded.warnings, []);
});

test("upper-case digests are normalised to lower case", (t) => {
  const [lightning] = loadFixture("valid-full.yaml").keystore.clients;
  t.is(
    lightning?.tokens[0]?.digest,
    "5e884898da28047151d0e56f8dc6292773603d0d6aabbdd62a11ef721d1542d8",
  );
});

test("sourceSha256 is the SHA-256 of the file, from text or from disk", (t) => {
  const file = fixture("valid-full.yaml");
  const expected = createHash("sha256").update(readFileSync(file)).digest("hex");
  t.is(loadFixture("valid-full.yaml").sourceSha256, expected);
  t.is(parseKeystore(readFileSync(file, "utf8"), options()).sourceSha256, expected);
});

test("expires accepts offsets, fractions and leap seconds as the instant they name", (t) => {
  const digest = "a".repeat(64);
  const expiry = (value: string) =>
    parseKeystore(
      `version: 1\nclients: [{id: x, tokens: [{sha256: ${digest}, expires: "${value}"}]}]\n`,
      options(),
    ).keystore.clients[0]?.tokens[0]?.expiresAt;
  t.is(expiry("2026-12-01T00:00:00Z"), Date.UTC(2026, 11, 1));
  t.is(expiry("2026-12-01T02:00:00+02:00"), Date.UTC(2026, 11, 1));
  t.is(expiry("2026-11-30T19:30:00.250-04:30"), Date.UTC(2026, 11, 1, 0, 0, 0, 250));
  t.is(expiry("2016-12-31T23:59:60Z"), Date.UTC(2017, 0, 1));
});

test("the schema's enc: pattern is the one the decrypter uses", (t) => {
  const schema = JSON.parse(readFileSync(SCHEMA_FILE, "utf8")) as {
    definitions: { upstreamKey: { allOf: Array<{ pattern: string }> } };
  };
  const shape = schema.definitions.upstreamKey.allOf[1]?.pattern ?? "";
  const encAlternative = ENC_PATTERN.source.slice(1, -1).replace(/[()]/g, "");
  t.true(shape.includes(`(?:${encAlternative}|`), shape);
});

// ---------------------------------------------------------------- warnings

const ONE_CLIENT = (upstreamKey: string, extra = "") => `version: 1
clients:
  - id: lightning-prod
    tokens:
      - sha256: ${"b".repeat(64)}
    upstream_key: ${upstreamKey}
${extra}`;

const LIGHTNING_ENC = encryptSecret(LIGHTNING_KEY_PLAINTEXT, "lightning-prod", "k1", K1);

/** Clients a and b fall back to the default; `own` brings its own key. */
const SHARED_DEFAULT = (defaultKey: string) => `version: 1
defaults:
  upstream_key: ${defaultKey}
clients:
  - id: a
    tokens: [{ sha256: ${"c".repeat(64)} }]
  - id: b
    tokens: [{ sha256: ${"d".repeat(64)} }]
  - id: own
    tokens: [{ sha256: ${"e".repeat(64)} }]
    upstream_key: env:OWN_KEY
`;

interface WarningCase {
  readonly name: string;
  readonly text: string;
  readonly masterKeys?: MasterKeys;
  readonly env?: Record<string, string | undefined>;
  readonly warning: string;
}

const WARNING_CASES: readonly WarningCase[] = [
  {
    name: "enc: value whose kid is not loaded",
    text: ONE_CLIENT(LIGHTNING_ENC),
    masterKeys: new Map(),
    warning:
      'keystore.yaml:6:19: clients[0].upstream_key: master key "k1" is not loaded (KEYGATE_MASTER_KEY or KEYGATE_MASTER_KEY_FILE); client "lightning-prod" will answer 503 KEY_UNAVAILABLE',
  },
  {
    name: "enc: value encrypted for another client id (wrong AAD)",
    text: ONE_CLIENT(encryptSecret(LIGHTNING_KEY_PLAINTEXT, "someone-else", "k1", K1)),
    warning:
      'keystore.yaml:6:19: clients[0].upstream_key: does not decrypt with master key "k1" for client id "lightning-prod"',
  },
  {
    name: "enc: value under a different key with the same kid",
    text: ONE_CLIENT(LIGHTNING_ENC),
    masterKeys: new Map([["k1", Buffer.alloc(32, 7)]]),
    warning: 'keystore.yaml:6:19: clients[0].upstream_key: does not decrypt with master key "k1"',
  },
  {
    name: "env: reference to an unset variable",
    text: ONE_CLIENT("env:LIGHTNING_KEY"),
    env: {},
    warning:
      'keystore.yaml:6:19: clients[0].upstream_key: environment variable LIGHTNING_KEY is not set; client "lightning-prod" will answer 503 KEY_UNAVAILABLE',
  },
  {
    name: "env: reference to an empty variable",
    text: ONE_CLIENT("env:LIGHTNING_KEY"),
    env: { LIGHTNING_KEY: "  " },
    warning:
      'keystore.yaml:6:19: clients[0].upstream_key: environment variable LIGHTNING_KEY is empty; client "lightning-prod" will answer 503 KEY_UNAVAILABLE',
  },
  {
    name: "default reference names every client that falls back to it",
    text: SHARED_DEFAULT("env:SHARED_KEY"),
    env: { OWN_KEY: "sk-ant-own" },
    warning:
      'keystore.yaml:3:17: defaults.upstream_key: environment variable SHARED_KEY is not set; clients "a", "b" will answer 503 KEY_UNAVAILABLE',
  },
  {
    name: "enc: default sealed for one client's id instead of as the shared default",
    text: SHARED_DEFAULT(encryptSecret(LIGHTNING_KEY_PLAINTEXT, "a", "k1", K1)),
    env: { OWN_KEY: "sk-ant-own" },
    warning:
      'keystore.yaml:3:17: defaults.upstream_key: does not decrypt with master key "k1" as the shared default (a different key with that kid, or not sealed with --defaults); clients "a", "b" will answer 503 KEY_UNAVAILABLE',
  },
];

for (const { name, text, masterKeys, env, warning } of WARNING_CASES) {
  test(`warning, file still valid: ${name}`, (t) => {
    const loaded = parseKeystore(
      text,
      options({ ...(masterKeys && { masterKeys }), ...(env && { env }) }),
    );
    const warnings = loaded.warnings.map(formatIssue);
    t.is(warnings.length, 1, warnings.join("\n"));
    t.true(warnings[0]?.startsWith(warning), warnings[0]);
    t.false(warnings[0]?.includes(LIGHTNING_KEY_PLAINTEXT), "never prints a key");
    t.false(warnings[0]?.includes("enc:v1:"), "never prints the enc: value");
  });
}

test("an internal client's unresolvable key is not warned about: it is never used", (t) => {
  const text = ONE_CLIENT("env:UNSET_KEY", "    kind: internal\n");
  t.deepEqual(parseKeystore(text, options({ env: {} })).warnings, []);
});

test("an enc: default sealed as the shared default (DEFAULTS_AAD) gives no warning", (t) => {
  const sealed = encryptSecret(LIGHTNING_KEY_PLAINTEXT, DEFAULTS_AAD, "k1", K1);
  const text = SHARED_DEFAULT(sealed);
  t.deepEqual(parseKeystore(text, options({ env: { OWN_KEY: "sk-ant-own" } })).warnings, []);
});

test("enc: outcomes reused from the previous load never outlive a change of master keys", (t) => {
  // The caller that loads repeatedly (the sync worker) keeps the checks; the loader holds none.
  const sealedKeyChecks: SealedKeyChecks = {};
  const text = ONE_CLIENT(LIGHTNING_ENC);
  const otherKey = options({
    masterKeys: new Map([["k1", Buffer.alloc(32, 7)]]),
    sealedKeyChecks,
  });
  t.deepEqual(parseKeystore(text, options({ sealedKeyChecks })).warnings, []);
  t.is(sealedKeyChecks.last?.byValue.size, 1, "the outcome is kept for the next load");
  t.is(parseKeystore(text, otherKey).warnings.length, 1, "same kid, different key");
  t.is(
    parseKeystore(text, options({ masterKeys: new Map(), sealedKeyChecks })).warnings.length,
    1,
    "no keys",
  );
  t.deepEqual(parseKeystore(text, options({ sealedKeyChecks })).warnings, []);
});

test("a resolvable key gives no warning", (t) => {
  t.deepEqual(parseKeystore(ONE_CLIENT(LIGHTNING_ENC), options()).warnings, []);
  t.deepEqual(parseKeystore(ONE_CLIENT("env:BATCH_KEY"), options()).warnings, []);
});

test("a value YAML reads as a number is reported with how to keep it a string", (t) => {
  const text = `version: 1\nclients:\n  - id: 123\n    tokens: [{ sha256: ${"a".repeat(64)} }]\n`;
  t.deepEqual(
    issuesOf(() => parseKeystore(text, options())),
    ['keystore.yaml:3:9: clients[0].id: must be a string; put it in quotes ("123")'],
  );
});

test("a digest YAML reads as a number is quoted as written, not as the number", (t) => {
  const digits = "1234567890".repeat(6).concat("1234");
  const text = `version: 1\nclients:\n  - id: a\n    tokens: [{ sha256: ${digits} }]\n`;
  t.deepEqual(
    issuesOf(() => parseKeystore(text, options())),
    [
      `keystore.yaml:4:24: clients[0].tokens[0].sha256: must be a string; put it in quotes ("${digits}")`,
    ],
  );
});

// ---------------------------------------------------------------- YAML for data only

const DIGEST_A = "a".repeat(64);
const CLIENT_A = `  - id: a\n    tokens:\n      - sha256: ${DIGEST_A}\n`;
const HEAD = "version: 1\nclients:\n";

interface RefusedYamlCase {
  readonly name: string;
  readonly text: string;
  /** The one issue expected. */
  readonly issue: string;
}

const DATA_ONLY = "keystore.yaml is data: write each value out in full";

const REFUSED_YAML: readonly RefusedYamlCase[] = [
  {
    name: "an anchor",
    text: `${HEAD}${CLIENT_A}    routes: &shared [/ok/]\n`,
    issue: `keystore.yaml:6:13: YAML: anchors (&) are not allowed; ${DATA_ONLY}`,
  },
  {
    name: "an anchor on a key",
    text: `${HEAD}  - &first id: a\n    tokens: []\n`,
    issue: `keystore.yaml:3:5: YAML: anchors (&) are not allowed; ${DATA_ONLY}`,
  },
  {
    name: "an alias (its anchor is refused first)",
    text: `${HEAD}${CLIENT_A}    routes: &r [/v1/]\n  - id: b\n    tokens: []\n    routes: *r\n`,
    issue: `keystore.yaml:6:13: YAML: anchors (&) are not allowed; ${DATA_ONLY}`,
  },
  {
    name: "an alias with no anchor",
    text: `${HEAD}${CLIENT_A}    name: *nowhere\n`,
    issue: `keystore.yaml:6:11: YAML: aliases (*) are not allowed; ${DATA_ONLY}`,
  },
  {
    name: "a core tag",
    text: `${HEAD}${CLIENT_A}    name: !!str 123\n`,
    issue: `keystore.yaml:6:11: YAML: tags (!) are not allowed; ${DATA_ONLY} (quote a value to keep it a string)`,
  },
  {
    name: "the non-specific tag",
    text: `${HEAD}${CLIENT_A}    name: ! 123\n`,
    issue: "keystore.yaml:6:11: YAML: tags (!) are not allowed",
  },
  {
    name: "a custom tag on a list",
    text: `${HEAD}${CLIENT_A}    models: !set [a]\n`,
    issue: "keystore.yaml:6:13: YAML: tags (!) are not allowed",
  },
  {
    name: "a merge key",
    text: `${HEAD}  - id: a\n    tokens: []\n    <<: { name: x }\n`,
    issue: `keystore.yaml:5:5: clients[0]["<<"]: merge keys (<<) are not allowed: keystore.yaml is data, write each field out in full`,
  },
  {
    name: "a second document",
    text: `${HEAD}${CLIENT_A}---\n${HEAD}${CLIENT_A}`,
    issue:
      "keystore.yaml:7:1: YAML: a second document (after ---) is not allowed: keystore.yaml is one document",
  },
];

for (const { name, text, issue } of REFUSED_YAML) {
  test(`YAML that is not plain data is refused with a located error: ${name}`, (t) => {
    const issues = issuesOf(() => parseKeystore(text, options()));
    t.is(issues.length, 1, issues.join("\n"));
    t.true(issues[0]?.startsWith(issue), issues[0]);
  });
}

test("YAML 1.2 core scalars: dates, yes, 1_000 and 0b1 stay strings; 0x1F and 1e3 are numbers", (t) => {
  const client = (id: string, name: string) =>
    `  - id: ${id}\n    name: ${name}\n    tokens: [{ sha256: ${createHash("sha256").update(id).digest("hex")} }]\n`;
  const text = `${HEAD}${client("a", "yes")}${client("b", "1_000")}${client("c", "0b1")}${client("d", "2026-12-01")}`;
  const names = parseKeystore(text, options()).keystore.clients.map((c) => c.name);
  t.deepEqual(names, ["yes", "1_000", "0b1", "2026-12-01"]);
  t.deepEqual(
    issuesOf(() => parseKeystore(`${HEAD}${client("a", "0x1F")}${client("b", "1e3")}`, options())),
    [
      'keystore.yaml:4:11: clients[0].name: must be a string; put it in quotes ("0x1F")',
      'keystore.yaml:7:11: clients[1].name: must be a string; put it in quotes ("1e3")',
    ],
  );
});

test("a key with nothing after it is reported at the key", (t) => {
  t.deepEqual(
    issuesOf(() => parseKeystore(`${HEAD}${CLIENT_A}    name:\n`, options())),
    ["keystore.yaml:6:5: clients[0].name: is empty; expected a string"],
  );
});

test("a flow list closed at its key's indentation is read, with a located warning", (t) => {
  const loaded = parseKeystore(
    `${HEAD}${CLIENT_A}    models: [\n      a,\n      b\n    ]\n`,
    options(),
  );
  t.deepEqual(loaded.keystore.clients[0]?.models, ["a", "b"]);
  t.deepEqual(loaded.warnings.map(formatIssue), ["keystore.yaml:9:5: YAML: deficient indentation"]);
});

// ---------------------------------------------------------------- positions

const UNSET = "env:UNSET";

interface PlacedCase {
  readonly name: string;
  readonly text: string;
  /** `line:column path` of each warning, top to bottom. */
  readonly placed: readonly string[];
}

/** Warnings are placed from a second read of the file; each layout must place them where the value is. */
const PLACED: readonly PlacedCase[] = [
  {
    name: "plain values, own key and default",
    text: `version: 1\ndefaults:\n  upstream_key: env:UNSET_DEFAULT\nclients:\n  - id: a\n    tokens: [{ sha256: ${DIGEST_A} }]\n  - id: b\n    tokens: [{ sha256: ${"b".repeat(64)} }]\n    upstream_key: ${UNSET}\n`,
    placed: ["3:17 defaults.upstream_key", "9:19 clients[1].upstream_key"],
  },
  {
    name: "quoted values, and a value on the line after a comment",
    text: `${HEAD}  - id: a\n    tokens: [{ sha256: ${DIGEST_A} }]\n    upstream_key: "${UNSET}"\n  - id: b\n    tokens: [{ sha256: ${"b".repeat(64)} }]\n    upstream_key: # the value follows\n      '${UNSET}'\n`,
    placed: ["5:19 clients[0].upstream_key", "9:7 clients[1].upstream_key"],
  },
  {
    name: "flow mappings in a block list, defaults after clients",
    text: `clients:\n  - { id: a, tokens: [{ sha256: ${DIGEST_A} }], upstream_key: ${UNSET} }\n  - {id: b, tokens: [{sha256: ${"b".repeat(64)}}]}\nversion: 1\ndefaults: { upstream_key: env:UNSET_DEFAULT }\n`,
    placed: ["2:116 clients[0].upstream_key", "5:27 defaults.upstream_key"],
  },
  {
    name: "CRLF line ends",
    text: `version: 1\r\nclients:\r\n  - id: a\r\n    tokens: [{ sha256: ${DIGEST_A} }]\r\n    upstream_key: ${UNSET}\r\n`,
    placed: ["5:19 clients[0].upstream_key"],
  },
  {
    name: "lone CR line ends",
    text: `version: 1\rclients:\r  - id: a\r    tokens: [{ sha256: ${DIGEST_A} }]\r    upstream_key: ${UNSET}\r`,
    placed: ["5:19 clients[0].upstream_key"],
  },
  {
    name: "a BOM with the value on the first line",
    text: `\ufeffclients: [{ id: a, tokens: [{ sha256: ${DIGEST_A} }], upstream_key: ${UNSET} }]\nversion: 1\n`,
    placed: ["1:122 clients[0].upstream_key"],
  },
];

for (const { name, text, placed } of PLACED) {
  test(`warnings are placed at their value: ${name}`, (t) => {
    const warnings = parseKeystore(text, options({ env: {} })).warnings;
    t.deepEqual(
      warnings.map((w) => `${w.line}:${w.column} ${w.message.split(":")[0]}`),
      placed,
    );
  });
}

test("a problem in a flow list of pairs is placed at the list", (t) => {
  const text = `${HEAD}${CLIENT_A}    models: [a: b]\n`;
  t.deepEqual(
    issuesOf(() => parseKeystore(text, options())),
    ["keystore.yaml:6:13: clients[0].models[0]: must be a string"],
  );
});
