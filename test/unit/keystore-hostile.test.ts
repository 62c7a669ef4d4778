/**
 * keystore.yaml written to do harm, or by mistake with a secret in the wrong place:
 * `env:` references to keygate's own settings or outside KEYGATE_UPSTREAM_ENV_PREFIX (a
 * located error), upstream keys that cannot be a header value (a warning for that client),
 * secrets pasted where the loader would quote them (redacted), and YAML built to cost:
 * alias bombs, deep nesting, huge scalars, many keys. Each gets a located answer at once.
 */
import { createHash } from "node:crypto";
import test from "ava";
import fc from "fast-check";
import { encryptSecret } from "../../server/crypto/aes-gcm.js";
import { type LoadOptions, parseKeystore } from "../../server/keystore/format/load.js";
import { DEFAULTS_AAD, formatIssue, KeystoreError } from "../../server/keystore/format/model.js";
import { listed } from "../../server/shown-text.js";

const K1 = createHash("sha256").update("keygate test master key k1").digest();
const MASTER_KEY_TEXT = `k1:${K1.toString("base64")}`;
const ENV = {
  KEYGATE_MASTER_KEY: MASTER_KEY_TEXT,
  KEYGATE_DB: "/var/lib/keygate/keystore.db",
  ANTHROPIC_API_KEY: "sk-ant-default",
  APOLLO_KEY: "sk-ant-apollo",
  CONTROL_KEY: "sk-ant-abc\x01def",
  TAB_KEY: "sk-ant-abc\tdef",
  DEL_KEY: "sk-ant-abc\x7Fdef",
  SPACE_INSIDE_KEY: "sk-ant-abc def",
  LEADING_SPACE_KEY: " sk-ant-abc",
  TRAILING_NEWLINE_KEY: "sk-ant-abc\n",
  WIDE_KEY: "sk-ant-abc\u20AC",
  OBS_TEXT_KEY: "sk-ant-caf\u00E9",
};
/** A provider key and a keygate token, as an operator might paste them by mistake. */
const PROVIDER_KEY = `sk-ant-api03-${"Zx9".repeat(30)}AA`;
const KEYGATE_TOKEN = `kg_${"Ab1-".repeat(11)}abcdef`;
const SECRET_SHAPED = /kg_|sk-/i;

function options(overrides: Partial<LoadOptions> = {}): LoadOptions {
  return {
    file: "keystore.yaml",
    masterKeys: new Map([["k1", K1]]),
    env: ENV,
    requireClients: true,
    ...overrides,
  };
}

function digest(seed: string): string {
  return createHash("sha256").update(seed).digest("hex");
}

/** One client `a` with `upstreamKey` and any extra lines for that client. */
function oneClient(upstreamKey: string, extra = ""): string {
  return `version: 1
clients:
  - id: a
    tokens:
      - sha256: ${digest("a")}
    upstream_key: ${upstreamKey}
${extra}`;
}

/** The issues parseKeystore throws, formatted. */
function refused(t: import("ava").ExecutionContext, text: string, opts = options()): string[] {
  try {
    parseKeystore(text, opts);
  } catch (error) {
    if (error instanceof KeystoreError) return error.issues.map(formatIssue);
    throw error;
  }
  t.fail("expected a KeystoreError");
  return [];
}

/** The warnings of a valid file. */
function warned(text: string, opts = options()): string[] {
  return parseKeystore(text, opts).warnings.map(formatIssue);
}

// ---------------------------------------------------------------- env: names

interface RefusedCase {
  readonly name: string;
  readonly text: string;
  readonly prefix?: string;
  readonly issue: string;
}

const REFUSED_ENV: readonly RefusedCase[] = [
  {
    name: "a client's key from the master key",
    text: oneClient("env:KEYGATE_MASTER_KEY"),
    issue:
      "keystore.yaml:6:19: clients[0].upstream_key: env:KEYGATE_MASTER_KEY names one of keygate's own settings",
  },
  {
    name: "a KEYGATE_ name in lower case (Windows reads the environment case-insensitively)",
    text: oneClient("env:keygate_master_key"),
    issue: "keystore.yaml:6:19: clients[0].upstream_key: env:keygate_master_key names one of",
  },
  {
    name: "any other KEYGATE_ setting",
    text: oneClient("env:KEYGATE_DB"),
    issue: "keystore.yaml:6:19: clients[0].upstream_key: env:KEYGATE_DB names one of",
  },
  {
    name: "the default from the master key",
    text: `version: 1\ndefaults:\n  upstream_key: env:KEYGATE_MASTER_KEY\nclients:\n  - id: a\n    tokens: [{ sha256: ${digest("a")} }]\n`,
    issue: "keystore.yaml:3:17: defaults.upstream_key: env:KEYGATE_MASTER_KEY names one of",
  },
  {
    name: "an internal client's key too: the file asks for something it must never do",
    text: oneClient("env:KEYGATE_MASTER_KEY", "    kind: internal\n"),
    issue: "keystore.yaml:6:19: clients[0].upstream_key: env:KEYGATE_MASTER_KEY names one of",
  },
  {
    name: "a name outside KEYGATE_UPSTREAM_ENV_PREFIX",
    text: oneClient("env:ANTHROPIC_API_KEY"),
    prefix: "APOLLO_",
    issue:
      "keystore.yaml:6:19: clients[0].upstream_key: env:ANTHROPIC_API_KEY is outside KEYGATE_UPSTREAM_ENV_PREFIX: the variable's name must start with APOLLO_",
  },
  {
    name: "the prefix is matched as written",
    text: oneClient("env:apollo_KEY"),
    prefix: "APOLLO_",
    issue: "keystore.yaml:6:19: clients[0].upstream_key: env:apollo_KEY is outside",
  },
  {
    name: "KEYGATE_ is refused even when it has the prefix",
    text: oneClient("env:KEYGATE_MASTER_KEY"),
    prefix: "KEYGATE_",
    issue: "keystore.yaml:6:19: clients[0].upstream_key: env:KEYGATE_MASTER_KEY names one of",
  },
];

for (const { name, text, prefix, issue } of REFUSED_ENV) {
  test(`env: refused with a located error: ${name}`, (t) => {
    const issues = refused(
      t,
      text,
      options(prefix === undefined ? {} : { upstreamEnvPrefix: prefix }),
    );
    t.is(issues.length, 1, issues.join("\n"));
    t.true(issues[0]?.startsWith(issue), issues[0]);
    t.false(issues[0]?.includes(MASTER_KEY_TEXT), "never prints the variable's value");
  });
}

test("env: names with the prefix, or any non-KEYGATE_ name without one, are accepted", (t) => {
  t.deepEqual(warned(oneClient("env:APOLLO_KEY"), options({ upstreamEnvPrefix: "APOLLO_" })), []);
  t.deepEqual(warned(oneClient("env:ANTHROPIC_API_KEY")), []);
  t.deepEqual(warned(oneClient("env:ANTHROPIC_API_KEY"), options({ upstreamEnvPrefix: null })), []);
});

test("env: refusals are reported with the file's other problems, top to bottom", (t) => {
  const text = `version: 1
defaults:
  upstream_key: env:KEYGATE_GRPC_ADDR
clients:
  - id: a
    tokens: [{ sha256: nothex }]
    upstream_key: env:OTHER_KEY
`;
  const issues = refused(t, text, options({ upstreamEnvPrefix: "APOLLO_" }));
  t.deepEqual(
    issues.map((issue) => issue.split(": ")[0]),
    ["keystore.yaml:3:17", "keystore.yaml:6:24", "keystore.yaml:7:19"],
    issues.join("\n"),
  );
});

// ---------------------------------------------------------------- key characters

interface WarnedCase {
  readonly name: string;
  readonly upstreamKey: string;
  readonly warning: string;
}

const sealed = (plain: string, aad = "a") => encryptSecret(plain, aad, "k1", K1);

const UNSENDABLE: readonly WarnedCase[] = [
  {
    name: "a control byte in an env: value",
    upstreamKey: "env:CONTROL_KEY",
    warning:
      'keystore.yaml:6:19: clients[0].upstream_key: environment variable CONTROL_KEY holds a character an HTTP header cannot carry (a line break or other control character, a space, DEL, or one beyond U+00FF); client "a" will answer 503 KEY_UNAVAILABLE',
  },
  {
    name: "a tab in an env: value",
    upstreamKey: "env:TAB_KEY",
    warning: "environment variable TAB_KEY holds a character an HTTP header cannot carry",
  },
  {
    name: "DEL in an env: value",
    upstreamKey: "env:DEL_KEY",
    warning: "environment variable DEL_KEY holds a character an HTTP header cannot carry",
  },
  {
    name: "a space inside an env: value",
    upstreamKey: "env:SPACE_INSIDE_KEY",
    warning: "environment variable SPACE_INSIDE_KEY holds a character",
  },
  {
    name: "a character beyond U+00FF in an env: value",
    upstreamKey: "env:WIDE_KEY",
    warning: "environment variable WIDE_KEY holds a character",
  },
  {
    name: "a leading space in an env: value",
    upstreamKey: "env:LEADING_SPACE_KEY",
    warning:
      "environment variable LEADING_SPACE_KEY has whitespace (a space or line break) before or after the key",
  },
  {
    name: "a trailing newline in an env: value",
    upstreamKey: "env:TRAILING_NEWLINE_KEY",
    warning: "environment variable TRAILING_NEWLINE_KEY has whitespace",
  },
  {
    name: "an enc: value that decrypts to a control byte",
    upstreamKey: sealed("sk-ant-abc\x01def"),
    warning:
      'keystore.yaml:6:19: clients[0].upstream_key: decrypts to a key that holds a character an HTTP header cannot carry (a line break or other control character, a space, DEL, or one beyond U+00FF); client "a" will answer 503 KEY_UNAVAILABLE',
  },
  {
    name: "an enc: value that decrypts to NUL",
    upstreamKey: sealed("sk-ant-abc\0"),
    warning: "decrypts to a key that holds a character an HTTP header cannot carry",
  },
  {
    name: "an enc: value that decrypts to a key with a trailing newline",
    upstreamKey: sealed("sk-ant-abc\r\n"),
    warning: "decrypts to a key that has whitespace",
  },
  {
    name: "an enc: value that decrypts to blanks",
    upstreamKey: sealed("   "),
    warning: "decrypts to a key that is empty",
  },
];

for (const { name, upstreamKey, warning } of UNSENDABLE) {
  test(`key that cannot be a header value: a warning for that client: ${name}`, (t) => {
    const warnings = warned(oneClient(upstreamKey));
    t.is(warnings.length, 1, warnings.join("\n"));
    t.true(warnings[0]?.includes(warning), warnings[0]);
    t.false(warnings[0]?.includes("sk-ant-abc"), "never prints the key");
  });
}

test("visible ASCII and obs-text keys are sendable", (t) => {
  t.deepEqual(warned(oneClient("env:OBS_TEXT_KEY")), []);
  t.deepEqual(warned(oneClient(sealed("sk-ant-~!#$%&'*+-.^_`|"))), []);
  t.deepEqual(warned(oneClient(sealed("sk-ant-caf\u00E9"))), []);
});

test("a default that cannot be sent names every client that falls back to it", (t) => {
  const text = `version: 1
defaults:
  upstream_key: ${encryptSecret("sk-ant-\x1b[2J", DEFAULTS_AAD, "k1", K1)}
clients:
  - id: a
    tokens: [{ sha256: ${digest("a")} }]
  - id: b
    tokens: [{ sha256: ${digest("b")} }]
`;
  const warnings = warned(text);
  t.is(warnings.length, 1);
  t.true(
    warnings[0]?.startsWith(
      "keystore.yaml:3:17: defaults.upstream_key: decrypts to a key that holds",
    ),
  );
  t.true(warnings[0]?.endsWith('clients "a", "b" will answer 503 KEY_UNAVAILABLE'), warnings[0]);
});

// ---------------------------------------------------------------- secrets never quoted

interface LeakCase {
  readonly name: string;
  readonly text: string;
  /** What the first issue must start with (its position and path as printed). */
  readonly issue: string;
}

const CLIENT_HEAD = `version: 1\nclients:\n  - id: a\n    tokens: [{ sha256: ${digest("a")} }]\n`;

const LEAKS: readonly LeakCase[] = [
  {
    name: "a provider key pasted as a client's field name",
    text: `${CLIENT_HEAD}    ${PROVIDER_KEY}: x\n`,
    issue: "keystore.yaml:5:5: clients[0][<redacted>]: unknown field (allowed: id, name",
  },
  {
    name: "a keygate token pasted as a client's field name",
    text: `${CLIENT_HEAD}    ${KEYGATE_TOKEN}: 1\n`,
    issue: "keystore.yaml:5:5: clients[0][<redacted>]: unknown field",
  },
  {
    name: "a keygate token as a top-level field",
    text: `${CLIENT_HEAD}${KEYGATE_TOKEN}: 1\n`,
    issue: "keystore.yaml:5:1: [<redacted>]: unknown field (allowed: version, defaults, clients)",
  },
  {
    name: "a provider key as a token's field name",
    text: `version: 1\nclients:\n  - id: a\n    tokens:\n      - sha256: ${digest("a")}\n        ${PROVIDER_KEY}: x\n`,
    issue: "keystore.yaml:6:9: clients[0].tokens[0][<redacted>]: unknown field",
  },
  {
    name: "a provider key under defaults, in a flow mapping",
    text: `version: 1\ndefaults: { ${PROVIDER_KEY}: x }\nclients: []\n`,
    issue: "keystore.yaml:2:13: defaults[<redacted>]: unknown field (allowed: upstream_key)",
  },
  {
    name: "a provider key as a client id, twice",
    text: `version: 1\nclients:\n  - id: ${PROVIDER_KEY}\n    tokens: []\n  - id: ${PROVIDER_KEY}\n    tokens: []\n`,
    issue: "keystore.yaml:3:9: clients[0].id: must be 1-64 characters",
  },
  {
    name: "a lower-case token-shaped client id, twice",
    text: `version: 1\nclients:\n  - id: kg_abcdef\n    tokens: []\n  - id: kg_abcdef\n    tokens: []\n`,
    issue:
      "keystore.yaml:5:9: clients[1].id: duplicate client id (already used by clients[0] at line 3)",
  },
  {
    name: "a digest shared by clients whose ids look like secrets",
    text: `version: 1\nclients:\n  - id: sk-one\n    tokens: [{ sha256: ${digest("x")} }]\n  - id: sk-two\n    tokens: [{ sha256: ${digest("x")} }]\n`,
    issue: `keystore.yaml:6:24: clients[1].tokens[0].sha256: digest ${digest("x").slice(0, 12)}… of client clients[1] already belongs to client clients[0]`,
  },
  {
    name: "a secret as an alias",
    text: `${CLIENT_HEAD}    name: *${KEYGATE_TOKEN}\n`,
    issue: "keystore.yaml:5:11: YAML: aliases (*) are not allowed",
  },
  {
    name: "a secret as a tag",
    text: `${CLIENT_HEAD}    name: !${KEYGATE_TOKEN} x\n`,
    issue: "keystore.yaml:5:11: YAML: tags (!) are not allowed",
  },
  {
    name: "a secret as a verbatim tag",
    text: `${CLIENT_HEAD}    name: !<${PROVIDER_KEY}> x\n`,
    issue: "keystore.yaml:5:11: YAML: tags (!) are not allowed",
  },
  {
    name: "a secret after a flow collection",
    text: `${CLIENT_HEAD}    routes: [/a/] ${PROVIDER_KEY}\n`,
    issue: "keystore.yaml:5:",
  },
  {
    name: "a long field name is cut short",
    text: `${CLIENT_HEAD}    ${"upstream_key_for_the_production_account".repeat(2)}: x\n`,
    issue: 'keystore.yaml:5:5: clients[0]["upstream_key_for…"]: unknown field',
  },
  {
    name: "a field name with control characters is escaped",
    text: `${CLIENT_HEAD}    "x\\u001b[2Jy": 1\n`,
    issue: 'keystore.yaml:5:5: clients[0]["x\\u001b[2Jy"]: unknown field',
  },
];

for (const { name, text, issue } of LEAKS) {
  test(`never quoted in a loader message: ${name}`, (t) => {
    const issues = refused(t, text);
    t.true(issues.length >= 1);
    t.true(issues[0]?.startsWith(issue), issues.join("\n"));
    for (const line of issues) {
      t.false(SECRET_SHAPED.test(line), line);
      t.false(line.includes("\x1b"), "no raw control character");
    }
  });
}

test("a secret in a YAML directive is redacted from the parser's warning", (t) => {
  const warnings = warned(`%${KEYGATE_TOKEN} x\n---\n${CLIENT_HEAD}`);
  t.deepEqual(warnings, ["keystore.yaml:2:1: YAML: unknown document directive <redacted>"]);
});

test("a warning does not name a client whose id looks like a secret", (t) => {
  const text = `version: 1
clients:
  - id: sk-live
    tokens: [{ sha256: ${digest("a")} }]
    upstream_key: env:UNSET_KEY
  - id: kg_runner
    tokens: [{ sha256: ${digest("b")} }]
    upstream_key: ${encryptSecret("sk-ant-x", "someone-else", "k1", K1)}
`;
  const warnings = warned(text);
  t.deepEqual(warnings, [
    "keystore.yaml:5:19: clients[0].upstream_key: environment variable UNSET_KEY is not set; client clients[0] will answer 503 KEY_UNAVAILABLE",
    `keystore.yaml:8:19: clients[1].upstream_key: does not decrypt with master key "k1" for this client's id (a different key with that kid, or encrypted for another client id); client clients[1] will answer 503 KEY_UNAVAILABLE`,
  ]);
});

test("a master key id shaped like a secret is redacted", (t) => {
  const value = encryptSecret("sk-ant-x", "a", "kg_kid", K1);
  const warnings = warned(oneClient(value));
  t.is(warnings.length, 1);
  t.true(warnings[0]?.includes("master key <redacted> is not loaded"), warnings[0]);
});

test("a client name is listed whole, but a secret pasted there is redacted and control characters are neutralised", (t) => {
  t.is(listed("Lightning production"), "Lightning production");
  t.is(listed("sk-ant-api03-pasted"), "<redacted>");
  t.is(listed("name\u001b[2Jclear"), "name\ufffd[2Jclear");
  t.is(listed("bell\u0007\u0085"), "bell\ufffd\ufffd");
});

// ---------------------------------------------------------------- built to cost

/** Milliseconds `load` takes; each case below is refused or read in well under a second. */
function timed(load: () => unknown): number {
  const started = performance.now();
  try {
    load();
  } catch (error) {
    if (!(error instanceof KeystoreError)) throw error;
  }
  return performance.now() - started;
}

/**
 * Each case takes well under a second alone; the bound is generous for a loaded 2-core
 * machine running other tests, and still far below what quadratic work would take.
 */
const STALL_MS = 15_000;

test("an alias bomb is refused at its first anchor, before anything is expanded", (t) => {
  const levels = Array.from({ length: 12 }, (_, level) => {
    const previous = level === 0 ? '"lol"' : `*l${level - 1}`;
    return `  l${level}: &l${level} [${Array(10).fill(previous).join(", ")}]`;
  });
  const text = `version: 1\nbomb:\n${levels.join("\n")}\nclients: []\n`;
  t.true(timed(() => parseKeystore(text, options())) < STALL_MS);
  t.deepEqual(refused(t, text), [
    "keystore.yaml:3:7: YAML: anchors (&) are not allowed; keystore.yaml is data: write each value out in full",
  ]);
});

test("deep nesting is refused where it gets too deep", (t) => {
  const text = `${CLIENT_HEAD}    models: ${"[".repeat(100_000)}${"]".repeat(100_000)}\n`;
  t.true(timed(() => parseKeystore(text, options())) < STALL_MS);
  const issues = refused(t, text);
  t.is(issues.length, 1);
  t.regex(issues[0] ?? "", /^keystore\.yaml:5:\d+: YAML: nesting exceeded maxDepth \(20\)$/);
});

test("a huge key is reported cut short, and a huge value is read", (t) => {
  const huge = "x".repeat(5_000_000);
  const key = `${CLIENT_HEAD}    ${huge}: 1\n`;
  t.true(timed(() => parseKeystore(key, options())) < STALL_MS);
  t.deepEqual(refused(t, key), [
    'keystore.yaml:5:5: clients[0]["xxxxxxxxxxxxxxxx…"]: unknown field (allowed: id, name, tokens, upstream_key, routes, models, disabled, kind, budget)',
  ]);
  const name = `${CLIENT_HEAD}    name: ${huge}\n`;
  t.is(parseKeystore(name, options()).keystore.clients[0]?.name?.length, huge.length);
});

test("many unknown keys are each reported, without a stall", (t) => {
  const count = 20_000;
  const fields = Array.from({ length: count }, (_, index) => `    f${index}: 1`).join("\n");
  const text = `${CLIENT_HEAD}${fields}\n`;
  t.true(timed(() => parseKeystore(text, options())) < STALL_MS);
  const issues = refused(t, text);
  t.is(issues.length, count);
  t.true(issues[count - 1]?.startsWith(`keystore.yaml:${4 + count}:5: clients[0].f${count - 1}:`));
});

test("a NUL byte is refused where it is", (t) => {
  t.deepEqual(refused(t, `${CLIENT_HEAD}    name: a\0b\n`), [
    "keystore.yaml:5:12: YAML: null byte is not allowed in input",
  ]);
});

// ---------------------------------------------------------------- anything at all

const SEED = `# keystore
version: 1
defaults:
  upstream_key: env:ANTHROPIC_API_KEY
clients:
  - id: a
    name: "Team A"
    tokens:
      - sha256: ${digest("a")}
        expires: 2026-12-01T00:00:00Z
    routes: [/v1/, /services/]
  - { id: b, tokens: [{ sha256: ${digest("b")} }], models: ['claude-*'] }
`;

/** The seed with a few characters YAML cares about dropped in, replaced or removed anywhere. */
const mutatedKeystore = fc
  .array(
    fc.tuple(
      fc.nat(),
      fc.nat(3),
      fc.constantFrom(..." \n\r\t-:[]{},'\"#&*!?|>%@`\\x1\u00e9\ufeff"),
    ),
    { minLength: 1, maxLength: 4 },
  )
  .map((edits) =>
    edits.reduce((text, [at, span, char]) => {
      const position = at % (text.length + 1);
      return text.slice(0, position) + char + text.slice(position + span);
    }, SEED),
  );

test("anything at all: a keystore or located issues inside the file, never a crash", (t) => {
  fc.assert(
    fc.property(mutatedKeystore, (text) => {
      const lines = text.split(/\r\n?|\n/).length;
      try {
        parseKeystore(text, options());
        return true;
      } catch (error) {
        if (!(error instanceof KeystoreError)) throw error;
        return error.issues.every(
          (issue) =>
            issue.file === "keystore.yaml" &&
            issue.line >= 1 &&
            issue.line <= lines &&
            issue.column >= 1 &&
            issue.message.length > 0,
        );
      }
    }),
    { numRuns: 2_000 },
  );
  t.pass();
});
