/**
 * The CLI refuses what the server would refuse, through the real bin: upstream keys on
 * stdin that cannot be a header value (add, set-upstream-key, encrypt), `env:` names of
 * keygate's own settings or outside KEYGATE_UPSTREAM_ENV_PREFIX (add, check, any edit),
 * and it never echoes a secret pasted into the wrong place.
 */
import test from "ava";
import { hashToken } from "../../server/crypto/token-hash.js";
import { type CliResult, printedToken, type Workspace, workspace } from "./run-keygate.js";

const PROVIDER_KEY = `sk-ant-api03-${"Zx9".repeat(30)}AA`;
const KEYGATE_TOKEN = `kg_${"Ab1-".repeat(11)}abcdef`;
const SECRET_SHAPED = /kg_|sk-/i;

function seed(ws: Workspace, upstreamKey = "env:ALPHA_KEY"): void {
  ws.write(`version: 1
clients:
  - id: alpha
    tokens:
      - sha256: ${hashToken("alpha-token")}
    upstream_key: ${upstreamKey}
`);
}

/** Exit 1 with exactly one line on stderr, matching `message`, and nothing on stdout. */
function failsWithOneLine(t: import("ava").ExecutionContext, result: CliResult, message: RegExp) {
  t.is(result.code, 1, result.stderr);
  t.is(result.stdout, "");
  t.is(result.stderr.split("\n").filter((line) => line !== "").length, 1, result.stderr);
  t.regex(result.stderr, message);
}

// ---------------------------------------------------------------- keys on stdin

const UNSENDABLE_KEYS: ReadonlyArray<readonly [name: string, stdin: string]> = [
  ["a control byte", "sk-ant-abc\x01def\n"],
  ["an escape sequence", "sk-ant-\x1b[2Jabc\n"],
  ["a tab inside", "sk-ant-abc\tdef\n"],
  ["a space inside", "sk-ant-abc def\n"],
  ["DEL", "sk-ant-abc\x7F\n"],
  ["a character beyond U+00FF", "sk-ant-abc\u20AC\n"],
  ["two lines", "sk-ant-one\nsk-ant-two\n"],
];

const STDIN_COMMANDS: ReadonlyArray<readonly [name: string, args: readonly string[]]> = [
  ["keystore add --upstream-key-stdin", ["keystore", "add", "beta", "--upstream-key-stdin"]],
  ["keystore set-upstream-key", ["keystore", "set-upstream-key", "alpha"]],
  ["keystore set-upstream-key --defaults", ["keystore", "set-upstream-key", "--defaults"]],
  ["encrypt --client", ["encrypt", "--client", "alpha"]],
];

for (const [command, args] of STDIN_COMMANDS) {
  for (const [name, stdin] of UNSENDABLE_KEYS) {
    test(`${command} refuses a key with ${name}: exit 1, one line, file untouched`, async (t) => {
      const ws = workspace(t);
      seed(ws);
      const before = ws.read();
      const result = await ws.run(args, { stdin });
      failsWithOneLine(
        t,
        result,
        /^keygate: the upstream key on stdin (holds a character an HTTP header cannot carry|has whitespace)/,
      );
      t.false(result.stderr.includes("sk-ant-"), "the key is not echoed");
      t.is(ws.read(), before);
    });
  }
}

test("stdin keys are still trimmed of the spaces and newline around a paste", async (t) => {
  const ws = workspace(t);
  seed(ws);
  const result = await ws.run(["encrypt", "--client", "alpha"], { stdin: "  sk-ant-pasted \n" });
  t.is(result.code, 0, result.stderr);
  t.regex(result.stdout, /^enc:v1:k1:\S+\n$/);
});

// ---------------------------------------------------------------- env: names

test("add --upstream-key-env refuses KEYGATE_* names with one line", async (t) => {
  for (const name of ["KEYGATE_MASTER_KEY", "KEYGATE_MASTER_KEY_FILE", "keygate_db"]) {
    const ws = workspace(t);
    seed(ws);
    const before = ws.read();
    const result = await ws.run(["keystore", "add", "beta", "--upstream-key-env", name]);
    failsWithOneLine(
      t,
      result,
      new RegExp(`^keygate: --upstream-key-env ${name} names one of keygate's own settings`),
    );
    t.is(ws.read(), before);
  }
});

test("add --upstream-key-env keeps to KEYGATE_UPSTREAM_ENV_PREFIX when it is set", async (t) => {
  const ws = workspace(t);
  seed(ws, "env:APOLLO_ALPHA");
  const env = { KEYGATE_UPSTREAM_ENV_PREFIX: "APOLLO_" };
  const before = ws.read();
  const refused = await ws.run(["keystore", "add", "beta", "--upstream-key-env", "OTHER_KEY"], {
    env,
  });
  failsWithOneLine(t, refused, /must start with APOLLO_/);
  t.is(ws.read(), before);
  printedToken(
    await ws.run(["keystore", "add", "beta", "--upstream-key-env", "APOLLO_BETA"], { env }),
  );
  t.true(ws.read().includes("upstream_key: env:APOLLO_BETA"));
});

test("keystore check refuses env:KEYGATE_MASTER_KEY with a located error", async (t) => {
  const ws = workspace(t);
  seed(ws, "env:KEYGATE_MASTER_KEY");
  const result = await ws.run(["keystore", "check"]);
  t.is(result.code, 1);
  t.is(
    result.stdout,
    `${ws.keystore}:6:19: clients[0].upstream_key: env:KEYGATE_MASTER_KEY names one of keygate's own settings: KEYGATE_* variables (the master key among them) are never an upstream key\n`,
  );
  t.false(result.stdout.includes(ws.masterKey.slice(3)), "never the master key");
});

test("keystore check applies KEYGATE_UPSTREAM_ENV_PREFIX from the environment", async (t) => {
  const ws = workspace(t);
  seed(ws, "env:ALPHA_KEY");
  t.is((await ws.run(["keystore", "check"], { env: { ALPHA_KEY: "sk-ant-a" } })).code, 0);
  const result = await ws.run(["keystore", "check"], {
    env: { ALPHA_KEY: "sk-ant-a", KEYGATE_UPSTREAM_ENV_PREFIX: "APOLLO_" },
  });
  t.is(result.code, 1);
  t.regex(
    result.stdout,
    /:6:19: clients\[0\]\.upstream_key: env:ALPHA_KEY is outside KEYGATE_UPSTREAM_ENV_PREFIX/,
  );
});

test("keystore check warns about an env: value that cannot be a header, without printing it", async (t) => {
  const ws = workspace(t);
  seed(ws, "env:ALPHA_KEY");
  const result = await ws.run(["keystore", "check"], { env: { ALPHA_KEY: "sk-ant-a\x01b" } });
  t.is(result.code, 0, "a warning, not an error: that client alone answers 503");
  t.regex(
    result.stderr,
    /:6:19: clients\[0\]\.upstream_key: environment variable ALPHA_KEY holds a character an HTTP header cannot carry .*\(warning\)/,
  );
  t.false(result.stderr.includes("sk-ant-a"));
});

test("an edit of a keystore that names KEYGATE_MASTER_KEY is refused, nothing written", async (t) => {
  const ws = workspace(t);
  seed(ws, "env:KEYGATE_MASTER_KEY");
  const before = ws.read();
  const result = await ws.run(["keystore", "disable", "alpha"]);
  t.is(result.code, 1);
  t.regex(result.stderr, /the edit would leave .* invalid, so nothing was written/);
  t.regex(result.stderr, /clients\[0\]\.upstream_key: env:KEYGATE_MASTER_KEY names one of/);
  t.is(ws.read(), before);
});

// ---------------------------------------------------------------- secrets never echoed

const ECHO_CASES: ReadonlyArray<
  readonly [name: string, args: readonly string[], code: number, message: RegExp]
> = [
  [
    "a token as the client id",
    ["keystore", "add", KEYGATE_TOKEN],
    1,
    /invalid client id <redacted>/,
  ],
  [
    "a provider key as the client id",
    ["keystore", "rotate", PROVIDER_KEY],
    1,
    /invalid client id <redacted>/,
  ],
  [
    "a provider key as an extra argument",
    ["keystore", "add", "beta", PROVIDER_KEY],
    2,
    /unexpected argument <redacted>/,
  ],
  [
    "a provider key as --upstream-key-env",
    ["keystore", "add", "beta", "--upstream-key-env", PROVIDER_KEY],
    1,
    /needs an environment variable name \(got <redacted>\)/,
  ],
  ["a token as an unknown flag", ["keystore", "list", `--${KEYGATE_TOKEN}`], 2, /Unknown option/],
  ["a provider key as the command", [PROVIDER_KEY], 2, /unknown command <redacted>/],
  [
    "a token as the keystore command",
    ["keystore", KEYGATE_TOKEN],
    2,
    /unknown keystore command <redacted>/,
  ],
  [
    "a provider key as --kid",
    ["encrypt", "--client", "alpha", "--kid", PROVIDER_KEY],
    1,
    /master key <redacted> is not loaded/,
  ],
  [
    "a provider key as --grace",
    ["keystore", "rotate", "alpha", "--grace", PROVIDER_KEY],
    1,
    /--grace must be .* \(got <redacted>\)/,
  ],
  [
    "a long argument is cut short",
    ["keystore", "add", "x".repeat(80)],
    1,
    /invalid client id "x{16}…"/,
  ],
];

for (const [name, args, code, message] of ECHO_CASES) {
  test(`never echoed by the CLI: ${name}`, async (t) => {
    const ws = workspace(t);
    seed(ws);
    const result = await ws.run(args);
    t.is(result.code, code, result.stderr);
    t.regex(result.stderr, message);
    t.false(SECRET_SHAPED.test(result.stderr.split("\n\n")[0] ?? ""), result.stderr);
    t.false(result.stderr.includes(PROVIDER_KEY) || result.stderr.includes(KEYGATE_TOKEN));
  });
}

test("keystore check never prints a secret pasted as a field name", async (t) => {
  const ws = workspace(t);
  ws.write(`version: 1
clients:
  - id: alpha
    tokens:
      - sha256: ${hashToken("alpha-token")}
    ${PROVIDER_KEY}: x
    ${KEYGATE_TOKEN}: 1
`);
  const result = await ws.run(["keystore", "check"]);
  t.is(result.code, 1);
  t.deepEqual(result.stdout.trimEnd().split("\n"), [
    `${ws.keystore}:6:5: clients[0][<redacted>]: unknown field (allowed: id, name, tokens, upstream_key, routes, models, disabled, kind, budget)`,
    `${ws.keystore}:7:5: clients[0][<redacted>]: unknown field (allowed: id, name, tokens, upstream_key, routes, models, disabled, kind, budget)`,
  ]);
});
