/**
 * Start-up and restart behaviour of the real server around keystore.yaml and the SQLite
 * database (DESIGN §5): fail closed with nothing to serve, last good generation on restart.
 */
import { rmSync, writeFileSync } from "node:fs";
import test from "ava";
import { hashToken } from "../../server/crypto/token-hash.js";
import { StartupError } from "../../server/main.js";
import { checkRequest } from "../helpers/check-request.js";
import { denialOf, setHeaders } from "../helpers/grpc-client.js";
import { startTestKeygate } from "../helpers/keygate-in-process.js";

const TOKEN = "kg-startup-token";
const VALID = `version: 1
clients:
  - id: alpha
    tokens:
      - sha256: ${hashToken(TOKEN)}
`;
const bearer = { json: { model: "m" }, headers: { authorization: `Bearer ${TOKEN}` } };

test("with neither keystore.yaml nor a database: not ready, every Check denied 503 UNAVAILABLE", async (t) => {
  const kg = await startTestKeygate();
  try {
    t.is(await kg.client.health(), "NOT_SERVING");
    const response = await kg.client.check(checkRequest(bearer));
    t.like(denialOf(response), { type: "UNAVAILABLE", status: 503 });
    t.is(response.status.code, 7);
    t.is((await fetch(`${kg.adminUrl}/readyz`)).status, 503);

    // The file appearing later (a ConfigMap mounted late) is picked up by a reload.
    writeFileSync(kg.keystorePath, VALID);
    t.is((await kg.running.reload()).result, "applied");
    t.is(await kg.client.health(), "SERVING");
    t.is(setHeaders(await kg.client.check(checkRequest(bearer)))["x-client-id"], "alpha");
  } finally {
    await kg.stop();
  }
});

test("an invalid keystore with no last good generation refuses to start, naming file:line:column", async (t) => {
  const error = await t.throwsAsync(
    startTestKeygate({ keystore: "version: 1\nclients:\n  - id: Bad Id\n    tokens: []\n" }),
    {
      instanceOf: StartupError,
    },
  );
  t.regex(error?.message ?? "", /keystore\.yaml:3:\d+: /);
});

test("an empty client list in enforce mode refuses to start", async (t) => {
  await t.throwsAsync(startTestKeygate({ keystore: "version: 1\nclients: []\n" }), {
    instanceOf: StartupError,
  });
});

test("an empty client list is accepted in recognize mode", async (t) => {
  const kg = await startTestKeygate({
    keystore: "version: 1\nclients: []\n",
    env: { KEYGATE_MODE: "recognize" },
  });
  try {
    t.is(await kg.client.health(), "SERVING");
    t.is((await kg.client.check(checkRequest({ json: { model: "m" } }))).status.code, 0);
  } finally {
    await kg.stop();
  }
});

test("restart on a broken keystore.yaml serves the last good generation and reports it stale", async (t) => {
  const first = await startTestKeygate({ keystore: VALID });
  const generation = first.running.keystore.generationId;
  await first.stop();

  writeFileSync(
    first.keystorePath,
    "version: 1\nclients:\n  - id: alpha\n    tokens: [ {sha256: nothex} ]\n",
  );
  const second = await startTestKeygate({ dir: first.dir });
  try {
    t.is(second.running.keystore.generationId, generation);
    t.true(second.running.keystore.status().stale);
    t.regex(second.running.keystore.status().lastError?.issues[0] ?? "", /keystore\.yaml:4:\d+/);
    t.is(setHeaders(await second.client.check(checkRequest(bearer)))["x-client-id"], "alpha");
    const status = (await (await fetch(`${second.adminUrl}/keystore`)).json()) as {
      stale: boolean;
    };
    t.true(status.stale);
  } finally {
    await second.stop();
  }
});

test("restart with keystore.yaml deleted still serves the last good generation, stale", async (t) => {
  const first = await startTestKeygate({ keystore: VALID });
  await first.stop();
  rmSync(first.keystorePath);
  const second = await startTestKeygate({ dir: first.dir });
  try {
    t.true(second.running.keystore.status().stale);
    t.is(setHeaders(await second.client.check(checkRequest(bearer)))["x-client-id"], "alpha");
  } finally {
    await second.stop();
  }
});

test("an upstream key that will not resolve is a warning on /keystore and in the log, after the generation is live", async (t) => {
  const other = "kg-startup-other";
  const unresolvable = `version: 1
clients:
  - id: alpha
    tokens:
      - sha256: ${hashToken(TOKEN)}
  - id: beta
    upstream_key: env:STARTUP_TEST_UNSET_UPSTREAM
    tokens:
      - sha256: ${hashToken(other)}
`;
  const kg = await startTestKeygate({ keystore: VALID });
  try {
    writeFileSync(kg.keystorePath, unresolvable);
    const reload = await kg.running.reload();
    t.is(reload.result, "applied");
    const status = (await (await fetch(`${kg.adminUrl}/keystore`)).json()) as {
      warnings: string[];
      generation: { id: number };
    };
    t.is<number | null, number | null>(status.generation.id, kg.running.keystore.generationId);
    t.is(status.warnings.length, 1);
    t.regex(status.warnings[0] ?? "", /keystore\.yaml:\d+:\d+: .*"beta".*503 KEY_UNAVAILABLE/);
    const warned = kg.logs
      .map((line) => JSON.parse(line) as { level: string; msg: string })
      .filter((entry) => entry.level === "warn" && entry.msg.includes("KEY_UNAVAILABLE"));
    t.is(warned.length, 1);
    t.regex(warned[0]?.msg ?? "", /"beta"/);
    const denial = denialOf(
      await kg.client.check(
        checkRequest({ json: { model: "m" }, headers: { authorization: `Bearer ${other}` } }),
      ),
    );
    t.like(denial, { type: "KEY_UNAVAILABLE", status: 503 });

    // Fixed: the next generation carries no warning.
    writeFileSync(kg.keystorePath, VALID);
    t.is((await kg.running.reload()).result, "applied");
    const fixed = (await (await fetch(`${kg.adminUrl}/keystore`)).json()) as { warnings: string[] };
    t.deepEqual(fixed.warnings, []);
  } finally {
    await kg.stop();
  }
});
