/**
 * parseKeystore reads a file two ways: the plain path (js-yaml, fast at 100 000 clients)
 * and the located path (yaml's Document, which places every issue). These tests hold the
 * two to one answer: on the fixtures, on a generated keystore, on warnings, on every
 * construct the plain path leaves to the located one, and on random variations.
 */
import { createHash } from "node:crypto";
import { readdirSync, readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { isDeepStrictEqual } from "node:util";
import test, { type ExecutionContext } from "ava";
import fc from "fast-check";
import { encryptSecret } from "../../server/crypto/aes-gcm.js";
import {
  type LoadOptions,
  parseKeystore,
  parseKeystoreLocated,
  parseKeystorePlain,
} from "../../server/keystore/load.js";
import { DEFAULTS_AAD, formatIssue, KeystoreError } from "../../server/keystore/types.js";

const FIXTURES = fileURLToPath(new URL("../fixtures/keystores/", import.meta.url));
const K1 = createHash("sha256").update("keygate test master key k1").digest();
const OPTIONS: LoadOptions = {
  file: "keystore.yaml",
  masterKeys: new Map([["k1", K1]]),
  env: { SET_KEY: "sk-ant-set", BLANK_KEY: " " },
  requireClients: true,
};
const BOM = "\uFEFF";

function digest(seed: string): string {
  return createHash("sha256").update(seed).digest("hex");
}

type Outcome =
  | { readonly loaded: ReturnType<typeof parseKeystoreLocated> }
  | { readonly issues: string[] };

function located(text: string, options: LoadOptions = OPTIONS): Outcome {
  try {
    return { loaded: parseKeystoreLocated(text, options) };
  } catch (error) {
    if (error instanceof KeystoreError) return { issues: error.issues.map(formatIssue) };
    throw error;
  }
}

/** Both paths agree; `plain` says whether the plain path must answer or must defer. */
function agree(
  t: ExecutionContext,
  text: string,
  plain: "answers" | "defers",
  options: LoadOptions = OPTIONS,
): void {
  const fast = parseKeystorePlain(text, options);
  const reference = located(text, options);
  if (plain === "answers") {
    t.not(fast, undefined, "the plain path answers");
    t.deepEqual({ loaded: fast }, reference);
  } else t.is(fast, undefined, "the plain path defers to the located path");
  let auto: Outcome;
  try {
    auto = { loaded: parseKeystore(text, options) };
  } catch (error) {
    if (!(error instanceof KeystoreError)) throw error;
    auto = { issues: error.issues.map(formatIssue) };
  }
  t.deepEqual(auto, reference, "parseKeystore gives the located path's answer");
}

// ---------------------------------------------------------------- valid keystores

for (const name of readdirSync(FIXTURES).filter((file) => file.startsWith("valid-"))) {
  test(`fixture ${name}: both paths give the same keystore`, (t) => {
    agree(t, readFileSync(`${FIXTURES}${name}`, "utf8"), "answers");
  });
}

/** Every field, in the styles operators write: block and flow, quoted and plain, comments. */
function generatedKeystore(count: number): string {
  const lines = [
    "# yaml-language-server: $schema=./schemas/keystore.schema.json",
    "version: 1",
    "defaults:",
    `  upstream_key: ${encryptSecret("sk-ant-default", DEFAULTS_AAD, "k1", K1)}`,
    "",
    "clients:",
  ];
  for (let index = 0; index < count; index++) {
    const id = `client-${String(index).padStart(4, "0")}`;
    const sha = digest(id);
    if (index % 9 === 4) {
      lines.push(`  - { id: ${id}, tokens: [{ sha256: ${sha} }], routes: [/v1/] }`);
      continue;
    }
    lines.push(`  - id: ${index % 5 === 0 ? `"${id}"` : id}`);
    if (index % 3 === 0)
      lines.push(`    name: ${index % 2 ? "'Team #" : "Team #"}${index}${index % 2 ? "'" : ""}`);
    if (index % 8 === 1) lines.push("    # a comment inside a client");
    lines.push("    tokens:", `      - sha256: ${index % 4 === 2 ? sha.toUpperCase() : sha}`);
    if (index % 6 === 0) lines.push("        expires: 2026-12-01T00:00:00Z");
    if (index % 6 === 3) lines.push(`        expires: "2027-01-01T12:30:00.5+02:00"`);
    if (index % 7 === 0) lines.push(`      - sha256: ${digest(`${id}-next`)}  # rotation`);
    if (index % 3 === 1) {
      lines.push(`    upstream_key: ${encryptSecret(`sk-ant-${index}`, id, "k1", K1)}`);
    }
    if (index % 3 === 2 && index % 2 === 0) lines.push("    upstream_key: env:SET_KEY");
    if (index % 10 === 9) lines.push("    models: [claude-sonnet-*, 'claude-haiku-4']");
    if (index % 11 === 5) lines.push("    routes:", "      - /v1/messages", "      - /services/");
    if (index % 13 === 0) lines.push("    disabled: true");
    if (index % 17 === 0) lines.push("    kind: internal");
  }
  return `${lines.join("\n")}\n`;
}

test("a generated keystore: both paths give the same keystore", (t) => {
  agree(t, generatedKeystore(400), "answers");
});

test("a generated keystore with CRLF line ends and a BOM: both paths agree", (t) => {
  const text = generatedKeystore(60).replace(/\n/g, "\r\n");
  agree(t, text, "answers");
  agree(t, `${BOM}${text}`, "answers");
});

test("YAML 1.2 core scalars read alike: dates, yes and 1_000 stay strings", (t) => {
  const text = `version: 1
clients:
  - id: a
    name: yes
    tokens:
      - sha256: ${digest("a")}
        expires: 2026-12-01T00:00:00Z
  - id: b
    name: 1_000
    tokens: [{ sha256: ${digest("b")} }]
  - id: c
    name: 0b1
    tokens: [{ sha256: ${digest("c")} }]
`;
  agree(t, text, "answers");
  const names = parseKeystore(text, OPTIONS).keystore.clients.map((client) => client.name);
  t.deepEqual(names, ["yes", "1_000", "0b1"]);
});

// ---------------------------------------------------------------- warnings

const WARN_KEY = encryptSecret("sk-ant-x", "someone-else", "k1", K1);

interface LayoutCase {
  readonly name: string;
  readonly text: string;
}

/** Warnings take positions from a second js-yaml read: each layout must place them as yaml does. */
const WARNING_LAYOUTS: readonly LayoutCase[] = [
  {
    name: "plain values, own key and default",
    text: `version: 1
defaults:
  upstream_key: env:UNSET_DEFAULT
clients:
  - id: a
    tokens: [{ sha256: ${digest("a")} }]
  - id: b
    tokens: [{ sha256: ${digest("b")} }]
    upstream_key: ${WARN_KEY}
  - id: c
    tokens: [{ sha256: ${digest("c")} }]
    upstream_key: env:BLANK_KEY
`,
  },
  {
    name: "quoted values, a value on the next line after a comment",
    text: `version: 1
clients:
  - id: a
    tokens: [{ sha256: ${digest("a")} }]
    upstream_key: "env:UNSET"
  - id: b
    tokens: [{ sha256: ${digest("b")} }]
    upstream_key: 'enc:v1:k2:${WARN_KEY.slice("enc:v1:k1:".length)}'
  - id: c
    tokens: [{ sha256: ${digest("c")} }]
    upstream_key: # the value follows
      env:UNSET
`,
  },
  {
    name: "flow mappings, defaults after clients",
    text: `clients:
  - { id: a, tokens: [{ sha256: ${digest("a")} }], upstream_key: env:UNSET }
  - {id: b, tokens: [{sha256: ${digest("b")}}]}
version: 1
defaults: { upstream_key: env:UNSET_DEFAULT }
`,
  },
  {
    name: "CRLF line ends",
    text: `version: 1\r\nclients:\r\n  - id: a\r\n    tokens: [{ sha256: ${digest("a")} }]\r\n    upstream_key: env:UNSET\r\n`,
  },
  {
    name: "a BOM before the first line",
    text: `${BOM}version: 1\nclients:\n  - id: a\n    tokens: [{ sha256: ${digest("a")} }]\n    upstream_key: env:UNSET\n`,
  },
  {
    name: "a BOM with the value on the first line",
    text: `${BOM}clients: [{ id: a, tokens: [{ sha256: ${digest("a")} }], upstream_key: env:UNSET }]\nversion: 1\n`,
  },
];

for (const { name, text } of WARNING_LAYOUTS) {
  test(`warnings are placed as the located path places them: ${name}`, (t) => {
    agree(t, text, "answers");
    t.true(parseKeystore(text, OPTIONS).warnings.length > 0, "the case has warnings");
  });
}

test("a kid that is not loaded warns for every client, on the plain path", (t) => {
  agree(t, generatedKeystore(200), "answers", { ...OPTIONS, masterKeys: new Map() });
});

// ---------------------------------------------------------------- the located path's share

const CLIENT = `  - id: a\n    tokens:\n      - sha256: ${digest("a")}\n`;
const HEAD = "version: 1\nclients:\n";

/** Files the plain path leaves to yaml: each gives exactly the answer it gave before. */
const DEFERRED: readonly LayoutCase[] = [
  {
    name: "an alias (yaml guards against alias bombs)",
    text: `${HEAD}  - id: a\n    tokens: [{ sha256: ${digest("a")} }]\n    routes: &r [/v1/]\n  - id: b\n    tokens: [{ sha256: ${digest("b")} }]\n    routes: *r\n`,
  },
  { name: "a tag", text: `${HEAD}${CLIENT}    name: !!str 123\n` },
  { name: "an unknown tag (a yaml warning)", text: `${HEAD}${CLIENT}    name: !custom x\n` },
  {
    name: "a %YAML 1.1 directive (yes is true)",
    text: `%YAML 1.1\n---\n${HEAD}${CLIENT}    disabled: yes\n`,
  },
  {
    name: "a merge key",
    text: `${HEAD}  - <<: {id: a}\n    tokens: [{ sha256: ${digest("a")} }]\n`,
  },
  {
    name: "an explicit key",
    text: `${HEAD}  - ? id\n    : a\n    tokens: [{ sha256: ${digest("a")} }]\n`,
  },
  {
    name: "a flow sequence as a key",
    text: `${HEAD}  - [id]: a\n    tokens: [{ sha256: ${digest("a")} }]\n`,
  },
  { name: "a block scalar", text: `${HEAD}${CLIENT}    name: |\n      Lightning\n` },
  {
    name: "a flow list over several lines",
    text: `${HEAD}${CLIENT}    models: [\n      a,\n      b\n    ]\n`,
  },
  {
    name: "a flow list closed at its key's indentation",
    text: `${HEAD}${CLIENT}    models: [\n      a\n    ]\n`,
  },
  { name: "a flow list indented too little", text: `${HEAD}${CLIENT}    models: [a,\n    b]\n` },
  { name: "a quoted value over two lines", text: `${HEAD}${CLIENT}    name: 'a\n      b'\n` },
  {
    name: "a comment touching a quote",
    text: `${HEAD}${CLIENT}    models:\n      - '*'#x\n`,
  },
  { name: "a tab", text: `${HEAD}${CLIENT}    name:\ta\n` },
  { name: "lone CR line ends", text: `${HEAD}${CLIENT}`.replace(/\n/g, "\r") },
  {
    name: "an empty list item",
    text: `${HEAD}  -\n    id: a\n    tokens: [{ sha256: ${digest("a")} }]\n`,
  },
  { name: "a BOM before an indented line", text: `${BOM} version: 1\n clients: []\n` },
  { name: "a BOM in the middle", text: `${HEAD}${CLIENT}${BOM}    name: a\n` },
  {
    name: "a key longer than 1024 characters",
    text: `${HEAD}${CLIENT}    ${"k".repeat(1030)}: 1\n`,
  },
  { name: "two documents", text: `${HEAD}${CLIENT}---\n${HEAD}${CLIENT}` },
  { name: "content on the document marker line", text: `--- ${HEAD.trimEnd()}\n${CLIENT}` },
  { name: "a duplicate key", text: `${HEAD}${CLIENT}    name: a\n    name: b\n` },
  { name: "a syntax error", text: `${HEAD}${CLIENT}   name: misindented\n` },
  {
    name: "a 64-digit all-numeric digest (a number to both parsers)",
    text: `${HEAD}  - id: a\n    tokens: [{ sha256: ${"1".repeat(64)} }]\n`,
  },
  { name: "a null value", text: `${HEAD}${CLIENT}    name: ~\n` },
  {
    name: "version: 0b1 (1 to js-yaml's core schema, a string to yaml)",
    text: `version: 0b1\nclients:\n${CLIENT}`,
  },
  { name: "an empty file", text: "" },
  {
    name: "an invalid fixture",
    text: readFileSync(`${FIXTURES}invalid-many-problems.yaml`, "utf8"),
  },
];

for (const { name, text } of DEFERRED) {
  test(`the located path answers: ${name}`, (t) => {
    agree(t, text, "defers");
  });
}

// ---------------------------------------------------------------- random variations

/** Mostly what a valid keystore holds, sometimes something else. */
const mostly = <T>(usual: fc.Arbitrary<T>, unusual: fc.Arbitrary<T>) =>
  fc.oneof({ weight: 20, arbitrary: usual }, { weight: 1, arbitrary: unusual });

/** A scalar written plain, single- or double-quoted. */
const scalar = (value: string) =>
  fc.constantFrom(value, `'${value.replace(/'/g, "''")}'`, JSON.stringify(value));

const list = (items: readonly string[]) =>
  fc.constantFrom(
    `[${items.join(", ")}]`,
    `\n${items.map((item) => `      - ${item}`).join("\n")}`,
  );

const optional = <T>(arbitrary: fc.Arbitrary<T>) => fc.option(arbitrary, { nil: undefined });

const clientFields = fc.record({
  odd: mostly(
    fc.constant(undefined),
    fc.constantFrom("Alpha", "123", "yes", "null", "a b", "0x1F"),
  ),
  idQuote: fc.nat(2),
  name: optional(
    mostly(
      fc.constantFrom("Lightning", "it's", "R&D", "Team 1", "1_000", "yes").chain(scalar),
      fc.constantFrom("a: b", "#x", "x # y", "+.5", "~", "", "0o7", "[a]", "-").chain(scalar),
    ),
  ),
  sha: mostly(fc.constantFrom("lower", "upper"), fc.constantFrom("1".repeat(64), "abc", "shared")),
  expires: optional(
    mostly(
      fc.constantFrom("2026-12-01T00:00:00Z", '"2027-01-01T10:00:00+01:00"'),
      fc.constantFrom("2026-12-01", "never"),
    ),
  ),
  key: optional(
    mostly(
      fc.constantFrom("env:SET_KEY", "env:UNSET", "own", "other", "k9"),
      fc.constantFrom("enc:v1:k1:QUJD", "sk-clear", '""', "env:BLANK_KEY"),
    ),
  ),
  keyQuote: fc.nat(2),
  models: optional(mostly(list(["claude-*", "'*'"]), list(['""']))),
  routes: optional(mostly(list(["/v1/", "/services/"]), list(["services/"]))),
  disabled: optional(mostly(fc.constantFrom("true", "false"), fc.constantFrom('"no"', "yes", "~"))),
  kind: optional(mostly(fc.constantFrom("client", "internal"), fc.constant("admin"))),
  flow: fc.boolean(),
  comment: fc.boolean(),
});

type ClientFields = typeof clientFields extends fc.Arbitrary<infer T> ? T : never;

const quoteAs = (value: string, style: number) =>
  [value, `'${value.replace(/'/g, "''")}'`, JSON.stringify(value)][style] ?? value;

function renderClient(client: ClientFields, index: number): string {
  const id = client.odd ?? `client-${index}`;
  const digests: Record<string, string> = {
    lower: digest(id),
    upper: digest(id).toUpperCase(),
    shared: digest("shared"),
  };
  const sealed: Record<string, string> = {
    own: encryptSecret("sk-ant-r", id, "k1", K1),
    other: encryptSecret("sk-ant-r", "someone-else", "k1", K1),
    k9: encryptSecret("sk-ant-r", id, "k9", K1),
  };
  const sha = digests[client.sha] ?? client.sha;
  const key = client.key === undefined ? undefined : (sealed[client.key] ?? client.key);
  const token =
    client.expires === undefined
      ? `{ sha256: ${sha} }`
      : `{ sha256: ${sha}, expires: ${client.expires} }`;
  const fields = [
    `id: ${quoteAs(id, client.idQuote)}`,
    client.name === undefined ? "" : `name: ${client.name}`,
    `tokens: [${token}]`,
    key === undefined ? "" : `upstream_key: ${quoteAs(key, client.keyQuote)}`,
    client.models === undefined ? "" : `models: ${client.models}`,
    client.routes === undefined ? "" : `routes: ${client.routes}`,
    client.disabled === undefined ? "" : `disabled: ${client.disabled}`,
    client.kind === undefined ? "" : `kind: ${client.kind}`,
  ].filter((field) => field !== "");
  if (client.flow && !fields.some((field) => field.includes("\n"))) {
    return `  - { ${fields.join(", ")} }${client.comment ? "  # note" : ""}\n`;
  }
  return `  - ${fields.join("\n    ")}\n${client.comment ? "    # note\n" : ""}`;
}

const keystoreText = fc
  .record({
    version: mostly(fc.constant("1"), fc.constantFrom("2", '"1"', "1.0")),
    defaults: optional(
      fc.constantFrom("env:SET_KEY", "env:UNSET", encryptSecret("d", DEFAULTS_AAD, "k1", K1)),
    ),
    clients: fc.array(clientFields, { maxLength: 5 }),
    defaultsLast: fc.boolean(),
    crlf: fc.boolean(),
    bom: fc.boolean(),
  })
  .map((file) => {
    const defaults =
      file.defaults === undefined ? "" : `defaults:\n  upstream_key: ${file.defaults}\n`;
    const clients =
      file.clients.length === 0
        ? "clients: []\n"
        : `clients:\n${file.clients.map(renderClient).join("")}`;
    const body = `# generated\nversion: ${file.version}\n${file.defaultsLast ? clients + defaults : defaults + clients}`;
    return `${file.bom ? BOM : ""}${file.crlf ? body.replace(/\n/g, "\r\n") : body}`;
  });

/** A few characters YAML cares about, dropped in anywhere. */
const mutated = fc
  .tuple(
    keystoreText,
    fc.array(
      fc.tuple(fc.nat(), fc.nat(), fc.constantFrom(..." \n-:[]{},'\"#&*!?|>%\tx1"), fc.boolean()),
      { maxLength: 3 },
    ),
  )
  .map(([text, edits]) =>
    edits.reduce((current, [at, span, char, replace]) => {
      const position = at % (current.length + 1);
      return (
        current.slice(0, position) + char + current.slice(position + (replace ? 1 + (span % 3) : 0))
      );
    }, text),
  );

test("random keystores: the plain path answers as the located path or defers", (t) => {
  const texts = fc.oneof({ weight: 3, arbitrary: keystoreText }, { weight: 1, arbitrary: mutated });
  fc.assert(
    fc.property(texts, fc.boolean(), (text, requireClients) => {
      const options = { ...OPTIONS, requireClients };
      const fast = parseKeystorePlain(text, options);
      return fast === undefined || isDeepStrictEqual({ loaded: fast }, located(text, options));
    }),
    { numRuns: 400 },
  );
  t.pass();
});
