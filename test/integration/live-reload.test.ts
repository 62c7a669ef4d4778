/**
 * Live reload of keystore.yaml (DESIGN §5) against the real server: in-process for most
 * tests, and the shipped `node dist/server/cli/main.js serve` for SIGHUP and the latency
 * operators see (run `npm run build` first). Real files and real filesystem events in a
 * temp directory, no manual reload call: each test saves the file the way an operator or
 * a platform does (rename-save, in-place write, Kubernetes' `..data` symlink swap), then
 * polls the server over real gRPC until the expected state shows, measuring the time from
 * the save; the bound is asserted on that measurement, never slept for. Everything is
 * serial, in one file: the tests measure latency, and a neighbour's load would be
 * measured with them.
 */
import {
  closeSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  openSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  renameSync,
  rmSync,
  symlinkSync,
  utimesSync,
  writeFileSync,
  writeSync,
} from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { setTimeout as delay } from "node:timers/promises";
import { fileURLToPath } from "node:url";
import test, { type ExecutionContext } from "ava";
import { digestPrefix, hashToken } from "../../server/crypto/token-hash.js";
import type { KeystoreStatus } from "../../server/keystore/reload/keystore-manager.js";
import { checkRequest } from "../helpers/check-request.js";
import {
  type CheckClient,
  createCheckClient,
  denialOf,
  setHeaders,
} from "../helpers/grpc-client.js";
import { startTestKeygate, type TestKeygate } from "../helpers/keygate-in-process.js";
import { type KeygateProcess, startKeygate } from "../helpers/keygate-process.js";

/** DESIGN §5: a valid edit is live, and a revoked token denied, within 1 s of the save (the built server). */
const RELOAD_BOUND_MS = 1000;
/**
 * In-process tests run from TypeScript: each reload worker loads tsx first, which
 * triples a sync's cost, and ava runs other files beside this one on 2 cores. The 1 s
 * promise is asserted against the built server below; here the bound catches a reload
 * that never happens or stalls, without failing on a loaded CI machine.
 */
const SOURCE_RELOAD_BOUND_MS = 2500;
/** Polling stops here, so a slow reload fails with its latency rather than a bare timeout. */
const GIVE_UP_MS = 5000;
const POLL_INTERVAL_MS = 5;
/** Successive edits per save style: the watch must survive the first save (a file watch would not). */
const EDITS_PER_STYLE = 3;

const FIXTURES = fileURLToPath(new URL("../fixtures/keystores/", import.meta.url));
const STABLE_TOKEN = "kg-live-stable-token";

interface ClientSpec {
  readonly id: string;
  readonly tokens: readonly string[];
  readonly name?: string;
}

function keystoreYaml(clients: readonly ClientSpec[]): string {
  const body = clients.map((client) =>
    [
      `  - id: ${client.id}`,
      ...(client.name === undefined ? [] : [`    name: ${client.name}`]),
      "    tokens:",
      ...client.tokens.map((token) => `      - sha256: ${hashToken(token)}`),
    ].join("\n"),
  );
  return `version: 1\nclients:\n${body.join("\n")}\n`;
}

/** The keystore after edit `n`: the stable client, plus `edit-n` whose token replaces edit n-1's. */
function editedKeystore(n: number): string {
  return keystoreYaml([
    { id: "alpha", tokens: [STABLE_TOKEN] },
    { id: `edit-${n}`, tokens: [editToken(n)] },
  ]);
}

function editToken(n: number): string {
  return `kg-live-edit-token-${n}`;
}

/** What a reload log line may show of a token: its digest's prefix. */
function prefixOf(token: string): string {
  return digestPrefix(hashToken(token));
}

// ------------------------------------------------------------------ how files get saved

/** An editor's save (vim, VS Code, `keygate` itself): write a temp file, rename it over. */
function renameSave(file: string, text: string | Buffer): void {
  const temp = path.join(path.dirname(file), `.${path.basename(file)}.${process.pid}.tmp`);
  writeFileSync(temp, text, { mode: 0o600 });
  renameSync(temp, file);
}

/** `echo ... > keystore.yaml`, nano, many scripts: truncate the same inode and write. */
function writeInPlace(file: string, text: string): void {
  const fd = openSync(file, "w");
  try {
    writeSync(fd, text);
  } finally {
    closeSync(fd);
  }
}

/**
 * A ConfigMap volume as the kubelet's AtomicWriter lays it out: keystore.yaml →
 * ..data/keystore.yaml, ..data → a timestamped directory. Publishing writes a new
 * timestamped directory, points ..data_tmp at it, renames ..data_tmp over ..data (the
 * atomic step), then deletes the old directory.
 */
function configMapPublisher(dir: string): (text: string) => void {
  let version = 0;
  const data = path.join(dir, "..data");
  return (text) => {
    version += 1;
    const stamped = `..2026_11_23_12_00_${String(version).padStart(2, "0")}.${process.pid}`;
    mkdirSync(path.join(dir, stamped), { mode: 0o755 });
    writeFileSync(path.join(dir, stamped, "keystore.yaml"), text, { mode: 0o644 });
    const previous = existsSync(data) ? readlinkSync(data) : undefined;
    symlinkSync(stamped, path.join(dir, "..data_tmp"));
    renameSync(path.join(dir, "..data_tmp"), data);
    if (previous !== undefined) rmSync(path.join(dir, previous), { recursive: true });
    if (!existsSync(path.join(dir, "keystore.yaml")))
      symlinkSync(path.join("..data", "keystore.yaml"), path.join(dir, "keystore.yaml"));
  };
}

interface SaveStyle {
  readonly name: string;
  /** Returns the function that saves a new version of dir/keystore.yaml. */
  readonly setUp: (dir: string) => (text: string) => void;
}

const SAVE_STYLES: readonly SaveStyle[] = [
  {
    name: "rename-save (temp file renamed over keystore.yaml)",
    setUp: (dir) => (text) => renameSave(path.join(dir, "keystore.yaml"), text),
  },
  {
    name: "in-place truncate-and-write",
    setUp: (dir) => {
      const file = path.join(dir, "keystore.yaml");
      return (text) => (existsSync(file) ? writeInPlace(file, text) : writeFileSync(file, text));
    },
  },
  {
    name: "Kubernetes ConfigMap ..data symlink swap",
    setUp: (dir) => configMapPublisher(dir),
  },
];

// ------------------------------------------------------------------ observing the server

/** `allow:<client id>` or `deny:<denial type>` for a Bearer token, as Envoy would hear it. */
async function decisionFor(client: CheckClient, token: string): Promise<string> {
  // curl -H "Authorization: Bearer $TOKEN" -d '{"model":"m"}' http://envoy/v1/messages
  const response = await client.check(
    checkRequest({ json: { model: "m" }, headers: { authorization: `Bearer ${token}` } }),
  );
  if (response.status.code === 0) return `allow:${setHeaders(response)["x-client-id"]}`;
  return `deny:${denialOf(response).type}`;
}

/**
 * Polls `probe` until it holds and resolves with the milliseconds since `since` (a
 * performance.now() taken right after the save), probe round trip included.
 * @throws Error when it still does not hold after GIVE_UP_MS.
 */
async function waitFor(
  what: string,
  since: number,
  probe: () => Promise<boolean> | boolean,
): Promise<number> {
  for (;;) {
    if (await probe()) return performance.now() - since;
    if (performance.now() - since > GIVE_UP_MS)
      throw new Error(`${what}: not seen within ${GIVE_UP_MS} ms of the save`);
    await delay(POLL_INTERVAL_MS);
  }
}

async function keystoreStatus(adminUrl: string): Promise<KeystoreStatus> {
  return (await (await fetch(`${adminUrl}/keystore`)).json()) as KeystoreStatus;
}

/** keygate_keystore_reloads_total{result} as /metrics shows it (0 before the first). */
async function reloadsTotal(
  adminUrl: string,
  result: "applied" | "unchanged" | "failed",
): Promise<number> {
  const text = await (await fetch(`${adminUrl}/metrics`)).text();
  const line = new RegExp(`^keygate_keystore_reloads_total\\{result="${result}"\\} (\\d+)$`, "m");
  return Number(text.match(line)?.[1] ?? 0);
}

function parsedLogs(kg: TestKeygate, from = 0): Record<string, unknown>[] {
  return kg.logs.slice(from).map((line) => JSON.parse(line) as Record<string, unknown>);
}

function assertWithinBound(
  t: ExecutionContext,
  what: string,
  latencyMs: number,
  bound = SOURCE_RELOAD_BOUND_MS,
): void {
  t.log(`${what}: ${latencyMs.toFixed(0)} ms`);
  t.true(latencyMs < bound, `${what} took ${latencyMs.toFixed(0)} ms (bound ${bound} ms)`);
}

async function withKeygate(
  setUp: (dir: string) => void,
  body: (kg: TestKeygate) => Promise<void>,
): Promise<void> {
  const dir = mkdtempSync(path.join(tmpdir(), "keygate-live-"));
  try {
    setUp(dir);
    const kg = await startTestKeygate({ dir });
    try {
      await body(kg);
    } finally {
      await kg.stop();
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

// ------------------------------------------------------------------ valid edits

for (const style of SAVE_STYLES) {
  test.serial(
    `${style.name}: a revoked token is denied and a new client accepted within 1 s, edit after edit`,
    async (t) => {
      let save: (text: string) => void = () => {};
      await withKeygate(
        (dir) => {
          save = style.setUp(dir);
          save(editedKeystore(0));
        },
        async (kg) => {
          t.is(await decisionFor(kg.client, editToken(0)), "allow:edit-0");
          for (let n = 1; n <= EDITS_PER_STYLE; n++) {
            const before = kg.running.keystore.generationId;
            save(editedKeystore(n));
            const saved = performance.now();
            const latency = await waitFor(`edit ${n}`, saved, async () => {
              const [revoked, added] = await Promise.all([
                decisionFor(kg.client, editToken(n - 1)),
                decisionFor(kg.client, editToken(n)),
              ]);
              return revoked === "deny:UNAUTHORIZED" && added === `allow:edit-${n}`;
            });
            assertWithinBound(t, `edit ${n}: revoked denied and new client allowed`, latency);
            t.is(await decisionFor(kg.client, STABLE_TOKEN), "allow:alpha");
            t.is(kg.running.keystore.generationId, (before ?? 0) + 1, "one generation per edit");
          }
          const status = await keystoreStatus(kg.adminUrl);
          t.false(status.stale);
          t.is(status.lastError, null);
        },
      );
    },
  );
}

test.serial("an in-place write caught half-way ends on the finished file", async (t) => {
  // An editor that truncates, then writes in two chunks, can be caught between them;
  // the watcher may reload the truncated or half file (invalid, so stale for a moment) but
  // must end on the complete one.
  await withKeygate(
    (dir) => writeFileSync(path.join(dir, "keystore.yaml"), editedKeystore(0)),
    async (kg) => {
      const text = editedKeystore(1);
      const fd = openSync(kg.keystorePath, "w");
      writeSync(fd, text.slice(0, text.length / 2));
      await delay(150); // longer than the debounce, so a reload of the half file is likely
      writeSync(fd, text.slice(text.length / 2));
      closeSync(fd);
      const saved = performance.now();
      const latency = await waitFor("complete file served", saved, async () => {
        const status = await keystoreStatus(kg.adminUrl);
        return !status.stale && (await decisionFor(kg.client, editToken(1))) === "allow:edit-1";
      });
      assertWithinBound(t, "complete file after a split in-place write", latency);
      t.is(await decisionFor(kg.client, editToken(0)), "deny:UNAUTHORIZED");
      t.is(await decisionFor(kg.client, STABLE_TOKEN), "allow:alpha");
    },
  );
});

// ------------------------------------------------------------------ invalid edits

test.serial(
  "an invalid edit keeps the last good generation serving, reports where, and a later valid edit applies",
  async (t) => {
    await withKeygate(
      (dir) => writeFileSync(path.join(dir, "keystore.yaml"), editedKeystore(0)),
      async (kg) => {
        const good = kg.running.keystore.generationId ?? 0;
        t.true(good > 0);
        const fixture = (name: string) => readFileSync(path.join(FIXTURES, name));
        const invalidEdits = [
          {
            fixture: "invalid-yaml-syntax.yaml",
            bytes: fixture("invalid-yaml-syntax.yaml"),
            at: "6:1",
          },
          // beta lists alpha's digest (upper case): a token may belong to one client only.
          {
            fixture: "invalid-duplicate-digest.yaml",
            bytes: fixture("invalid-duplicate-digest.yaml"),
            at: "10:17",
          },
          // A Latin-1 byte in a comment: `keygate keystore check` refuses the file, so the
          // server must not serve it either (it used to read the byte as U+FFFD).
          {
            fixture: "a comment in Latin-1",
            bytes: Buffer.concat([
              Buffer.from("# caf"),
              Buffer.from([0xe9]),
              Buffer.from("\n"),
              Buffer.from(editedKeystore(1)),
            ]),
            at: "1:6",
          },
        ];
        for (const edit of invalidEdits) {
          const failedBefore = await reloadsTotal(kg.adminUrl, "failed");
          const logsBefore = kg.logs.length;
          renameSave(kg.keystorePath, edit.bytes);
          const saved = performance.now();
          const location = `${kg.keystorePath}:${edit.at}: `;
          const latency = await waitFor(`${edit.fixture} reported`, saved, async () => {
            const status = await keystoreStatus(kg.adminUrl);
            return status.stale && (status.lastError?.issues[0] ?? "").startsWith(location);
          });
          assertWithinBound(t, `${edit.fixture}: stale with its location on /keystore`, latency);

          t.is(await reloadsTotal(kg.adminUrl, "failed"), failedBefore + 1, edit.fixture);
          const errorLine = parsedLogs(kg, logsBefore).find(
            (line) =>
              line.level === "error" &&
              Array.isArray(line.issues) &&
              (line.issues as string[]).some((issue) => issue.startsWith(location)),
          );
          t.truthy(errorLine, `an error log line names ${location}`);
          t.is(errorLine?.serving_generation, good);

          t.is(kg.running.keystore.generationId, good, "the last good generation is kept");
          t.is((await keystoreStatus(kg.adminUrl)).generation?.id, good);
          t.is(
            await decisionFor(kg.client, STABLE_TOKEN),
            "allow:alpha",
            "old tokens still allowed",
          );
          t.is(await decisionFor(kg.client, editToken(0)), "allow:edit-0");
          // The fixture's digest is SHA-256("password"): nothing of the invalid file is served.
          t.is(await decisionFor(kg.client, "password"), "deny:UNAUTHORIZED");
          t.is(await kg.client.health(), "SERVING");
        }

        renameSave(kg.keystorePath, editedKeystore(1));
        const saved = performance.now();
        const latency = await waitFor("valid edit after invalid ones", saved, async () => {
          const status = await keystoreStatus(kg.adminUrl);
          return (
            !status.stale && (await decisionFor(kg.client, editToken(0))) === "deny:UNAUTHORIZED"
          );
        });
        assertWithinBound(t, "valid edit after invalid ones: applied, not stale", latency);
        const status = await keystoreStatus(kg.adminUrl);
        t.is(status.lastError, null);
        t.is(status.generation?.id, good + 1);
        t.is(await decisionFor(kg.client, editToken(1)), "allow:edit-1");
      },
    );
  },
);

test.serial(
  "a deleted, then restored keystore.yaml: last good served while stale, then the same generation again",
  async (t) => {
    await withKeygate(
      (dir) => writeFileSync(path.join(dir, "keystore.yaml"), editedKeystore(0)),
      async (kg) => {
        const generation = (await keystoreStatus(kg.adminUrl)).generation;
        const breakages: ReadonlyArray<readonly [string, () => void, string]> = [
          ["deleted", () => rmSync(kg.keystorePath), "1:1: cannot read the keystore: no such file"],
          [
            "broken in place",
            () => writeInPlace(kg.keystorePath, "version: 1\nclients: [\n"),
            "3:1: YAML: ",
          ],
        ];
        for (const [name, breakIt, issue] of breakages) {
          breakIt();
          const broken = performance.now();
          const latency = await waitFor(`${name}: stale`, broken, async () => {
            const status = await keystoreStatus(kg.adminUrl);
            return status.stale && (status.lastError?.issues[0] ?? "").includes(issue);
          });
          assertWithinBound(t, `${name}: stale`, latency);
          t.is(
            await decisionFor(kg.client, editToken(0)),
            "allow:edit-0",
            `${name}: last good served`,
          );
          t.is(await kg.client.health(), "SERVING");

          // Restoring the very bytes of the generation served is not a new generation.
          renameSave(kg.keystorePath, editedKeystore(0));
          const restored = performance.now();
          assertWithinBound(
            t,
            `${name}, then restored: not stale`,
            await waitFor(`${name}: restored`, restored, async () => {
              return !(await keystoreStatus(kg.adminUrl)).stale;
            }),
          );
          const status = await keystoreStatus(kg.adminUrl);
          t.deepEqual(status.generation, generation, `${name}: same generation`);
          t.is(status.lastError, null);
        }
      },
    );
  },
);

test.serial("a burst of saves, some while a reload runs, ends on the last one", async (t) => {
  const SAVES = 15;
  await withKeygate(
    (dir) => writeFileSync(path.join(dir, "keystore.yaml"), editedKeystore(0)),
    async (kg) => {
      const before = kg.running.keystore.generationId ?? 0;
      for (let n = 1; n < SAVES; n++) {
        renameSave(kg.keystorePath, editedKeystore(n));
        // 0–77 ms apart: some inside the debounce, some while a sync is in its worker.
        await delay((n * 37) % 80);
      }
      renameSave(kg.keystorePath, editedKeystore(SAVES));
      const saved = performance.now();
      const latency = await waitFor("last save live", saved, async () => {
        return (await decisionFor(kg.client, editToken(SAVES))) === `allow:edit-${SAVES}`;
      });
      assertWithinBound(t, "burst: last save live", latency);
      for (let n = 0; n < SAVES; n++)
        t.is(await decisionFor(kg.client, editToken(n)), "deny:UNAUTHORIZED", `edit ${n} revoked`);
      const after = kg.running.keystore.generationId ?? 0;
      t.true(after > before && after <= before + SAVES, `generations ${before} → ${after}`);
      t.false((await keystoreStatus(kg.adminUrl)).stale);
    },
  );
});

// ------------------------------------------------------------------ under load

test.serial("no Check is dropped or wrongly denied while reloads apply under load", async (t) => {
  // About 1 000 Checks a second (batches of 10 every 10 ms) with a token that stays
  // valid, while rename-saves add a client at a time; the load goes on until every reload
  // is live and for a tail after the last one.
  const BATCH = 10;
  const BATCH_INTERVAL_MS = 10;
  const MIN_CHECKS = 2000;
  const TAIL_CHECKS = 300;
  /** Bounds the run even if the reloads stall. */
  const MAX_CHECKS = 20_000;
  const RELOADS = 5;
  await withKeygate(
    (dir) => writeFileSync(path.join(dir, "keystore.yaml"), editedKeystore(0)),
    async (kg) => {
      const start = kg.running.keystore.generationId ?? 0;
      // curl -H "Authorization: Bearer $STABLE_TOKEN" -d '{"model":"m"}' http://envoy/v1/messages
      const request = checkRequest({
        json: { model: "m" },
        headers: { authorization: `Bearer ${STABLE_TOKEN}` },
      });
      const failures: string[] = [];
      const generationsAnswered = new Set<number>();
      let answered = 0;
      const checkOnce = async () => {
        try {
          const response = await kg.client.check(request);
          const clientId = setHeaders(response)["x-client-id"];
          if (response.status.code !== 0 || clientId !== "alpha")
            failures.push(`code ${response.status.code}, client ${clientId}`);
        } catch (error) {
          failures.push((error as Error).message);
        }
        answered += 1;
        generationsAnswered.add(kg.running.keystore.generationId ?? 0);
      };
      let sent = 0;
      let stopAt = MAX_CHECKS;
      const inFlight: Promise<void>[] = [];
      const load = (async () => {
        while (sent < stopAt) {
          for (let i = 0; i < BATCH; i++, sent++) inFlight.push(checkOnce());
          await delay(BATCH_INTERVAL_MS);
        }
        await Promise.all(inFlight);
      })();

      const latencies: number[] = [];
      let sentAtLastApply = 0;
      try {
        await waitFor("load under way", performance.now(), () => answered >= 100);
        for (let n = 1; n <= RELOADS; n++) {
          renameSave(kg.keystorePath, editedKeystore(n));
          const saved = performance.now();
          latencies.push(
            await waitFor(`reload ${n} under load`, saved, async () => {
              return (await decisionFor(kg.client, editToken(n))) === `allow:edit-${n}`;
            }),
          );
        }
        sentAtLastApply = sent;
      } finally {
        stopAt = Math.max(MIN_CHECKS, sent + TAIL_CHECKS);
        await load;
      }

      t.log(
        `${answered} Checks, ${RELOADS} reloads; reload latencies under load: ${latencies.map((ms) => ms.toFixed(0)).join(", ")} ms`,
      );
      t.deepEqual(failures.slice(0, 5), [], `${failures.length} of ${answered} Checks failed`);
      t.is(answered, sent, "every Check was answered");
      t.true(answered >= MIN_CHECKS);
      t.true(sent >= sentAtLastApply + TAIL_CHECKS, "the load ran on after the last reload");
      t.is(kg.running.keystore.generationId, start + RELOADS, "every reload applied");
      t.true(generationsAnswered.size > RELOADS, "Checks were answered on every generation");
      // Client and server share this process's event loop, so single samples are noisy;
      // the median still fails if reloads under load are slow as a rule.
      const median = [...latencies].sort((a, b) => a - b)[Math.floor(RELOADS / 2)] ?? Infinity;
      t.true(median < SOURCE_RELOAD_BOUND_MS, `median reload under load ${median.toFixed(0)} ms`);
    },
  );
});

// ------------------------------------------------------------------ unchanged content

test.serial(
  "saving the same bytes (touch, in-place rewrite, rename-save) makes no new generation",
  async (t) => {
    await withKeygate(
      (dir) => writeFileSync(path.join(dir, "keystore.yaml"), editedKeystore(0)),
      async (kg) => {
        const text = editedKeystore(0);
        const generation = (await keystoreStatus(kg.adminUrl)).generation;
        const applied = await reloadsTotal(kg.adminUrl, "applied");
        const logsBefore = kg.logs.length;
        const resaves: ReadonlyArray<readonly [string, () => void]> = [
          ["touch", () => utimesSync(kg.keystorePath, new Date(), new Date())],
          ["in-place rewrite", () => writeInPlace(kg.keystorePath, text)],
          ["rename-save", () => renameSave(kg.keystorePath, text)],
        ];
        for (const [name, resave] of resaves) {
          const unchanged = await reloadsTotal(kg.adminUrl, "unchanged");
          resave();
          // The positive signal that the watcher saw it and the reload decided "unchanged".
          const latency = await waitFor(`${name} seen`, performance.now(), async () => {
            return (await reloadsTotal(kg.adminUrl, "unchanged")) > unchanged;
          });
          t.log(`${name}: judged unchanged after ${latency.toFixed(0)} ms`);
          t.deepEqual((await keystoreStatus(kg.adminUrl)).generation, generation, name);
        }
        t.is(await reloadsTotal(kg.adminUrl, "applied"), applied);
        t.is(await reloadsTotal(kg.adminUrl, "failed"), 0);
        t.false(
          parsedLogs(kg, logsBefore).some((line) => line.msg === "keystore generation applied"),
        );
        t.is(await decisionFor(kg.client, editToken(0)), "allow:edit-0");
      },
    );
  },
);

// ------------------------------------------------------------------ start-up states

test.serial(
  "with no keystore at start, creating keystore.yaml makes the server ready through the watcher",
  async (t) => {
    await withKeygate(
      () => {},
      async (kg) => {
        t.is(await kg.client.health(), "NOT_SERVING");
        t.is(await decisionFor(kg.client, STABLE_TOKEN), "deny:UNAVAILABLE");
        t.is((await fetch(`${kg.adminUrl}/readyz`)).status, 503);

        renameSave(kg.keystorePath, editedKeystore(0));
        const saved = performance.now();
        const latency = await waitFor("ready after the file appears", saved, async () => {
          return (await decisionFor(kg.client, STABLE_TOKEN)) === "allow:alpha";
        });
        assertWithinBound(t, "keystore.yaml created: first Check allowed", latency);
        t.is(await kg.client.health(), "SERVING");
        t.is((await fetch(`${kg.adminUrl}/readyz`)).status, 200);
        const status = await keystoreStatus(kg.adminUrl);
        t.false(status.stale);
        t.is(status.generation?.clientCount, 2);
      },
    );
  },
);

test.serial("a keystore directory that appears after start is found by the poll", async (t) => {
  // A ConfigMap volume mounted late: there is no directory to watch yet, so only the
  // 1 s stat poll can notice; allow one poll interval on top of the reload bound.
  const POLL_BOUND_MS = 2000;
  const dir = mkdtempSync(path.join(tmpdir(), "keygate-live-"));
  const mount = path.join(dir, "mount");
  const keystorePath = path.join(mount, "keystore.yaml");
  const kg = await startTestKeygate({ dir, env: { KEYGATE_KEYSTORE: keystorePath } });
  try {
    t.is(await decisionFor(kg.client, STABLE_TOKEN), "deny:UNAVAILABLE");
    mkdirSync(mount);
    writeFileSync(keystorePath, editedKeystore(0));
    const saved = performance.now();
    const latency = await waitFor("ready after the directory appears", saved, async () => {
      return (await decisionFor(kg.client, STABLE_TOKEN)) === "allow:alpha";
    });
    t.log(`late directory: first Check allowed after ${latency.toFixed(0)} ms`);
    t.true(latency < POLL_BOUND_MS, `${latency.toFixed(0)} ms (bound ${POLL_BOUND_MS} ms)`);

    // From then on it is watched like any other: an edit is live within the usual bound.
    renameSave(keystorePath, editedKeystore(1));
    const edited = performance.now();
    assertWithinBound(
      t,
      "late directory: next edit",
      await waitFor("edit in the late directory", edited, async () => {
        return (await decisionFor(kg.client, editToken(0))) === "deny:UNAUTHORIZED";
      }),
    );
  } finally {
    await kg.stop();
    rmSync(dir, { recursive: true, force: true });
  }
});

test.serial(
  "after a restart on a broken file, fixing the file clears stale through the watcher",
  async (t) => {
    // keystore-startup.test.ts covers the restart itself (last good served, stale); this
    // covers what follows: the operator's fix is picked up live, without a second restart.
    const dir = mkdtempSync(path.join(tmpdir(), "keygate-live-"));
    try {
      writeFileSync(path.join(dir, "keystore.yaml"), editedKeystore(0));
      await (await startTestKeygate({ dir })).stop();
      writeFileSync(
        path.join(dir, "keystore.yaml"),
        readFileSync(path.join(FIXTURES, "invalid-yaml-syntax.yaml")),
      );
      const kg = await startTestKeygate({ dir });
      try {
        t.true((await keystoreStatus(kg.adminUrl)).stale);
        t.is(await decisionFor(kg.client, editToken(0)), "allow:edit-0");

        renameSave(kg.keystorePath, editedKeystore(1));
        const saved = performance.now();
        const latency = await waitFor("fix applied", saved, async () => {
          const status = await keystoreStatus(kg.adminUrl);
          return !status.stale && (await decisionFor(kg.client, editToken(1))) === "allow:edit-1";
        });
        assertWithinBound(t, "fix after a restart on a broken file", latency);
        t.is((await keystoreStatus(kg.adminUrl)).lastError, null);
        t.is(await decisionFor(kg.client, editToken(0)), "deny:UNAUTHORIZED");
      } finally {
        await kg.stop();
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  },
);

// ------------------------------------------------------------------ what the reload says

test.serial(
  "a reload's log line lists what changed, by client id and digest prefix, never a secret",
  async (t) => {
    const tokens = {
      alphaOld: "kg-live-alpha-old",
      alphaNew: "kg-live-alpha-new",
      beta: "kg-live-beta",
      gamma: "kg-live-gamma",
      stable: STABLE_TOKEN,
    };
    const before = keystoreYaml([
      { id: "alpha", tokens: [tokens.alphaOld] },
      { id: "beta", tokens: [tokens.beta] },
      { id: "steady", tokens: [tokens.stable] },
    ]);
    const after = keystoreYaml([
      // Renamed (a client change) and rotated (one token added, one revoked).
      { id: "alpha", name: "Alpha renamed", tokens: [tokens.alphaNew] },
      { id: "steady", tokens: [tokens.stable] },
      { id: "gamma", tokens: [tokens.gamma] },
    ]);
    await withKeygate(
      (dir) => writeFileSync(path.join(dir, "keystore.yaml"), before),
      async (kg) => {
        const logsBefore = kg.logs.length;
        renameSave(kg.keystorePath, after);
        const saved = performance.now();
        const latency = await waitFor("change log line", saved, () =>
          parsedLogs(kg, logsBefore).some((line) => line.msg === "keystore changes"),
        );
        assertWithinBound(t, "reload logged", latency);
        const line = parsedLogs(kg, logsBefore).find((entry) => entry.msg === "keystore changes");
        const changes = line?.changes as Record<string, string[]> | undefined;
        const sorted = (values: readonly string[] | undefined) => [...(values ?? [])].sort();
        t.deepEqual(sorted(changes?.clientsAdded), ["gamma"]);
        t.deepEqual(sorted(changes?.clientsRemoved), ["beta"]);
        t.deepEqual(sorted(changes?.clientsChanged), ["alpha"]);
        t.deepEqual(
          sorted(changes?.tokensAdded),
          sorted([tokens.alphaNew, tokens.gamma].map(prefixOf)),
        );
        t.deepEqual(
          sorted(changes?.tokensRevoked),
          sorted([tokens.alphaOld, tokens.beta].map(prefixOf)),
        );

        const secrets = Object.values(tokens).flatMap((token) => [token, hashToken(token)]);
        for (const raw of kg.logs.slice(logsBefore))
          for (const secret of secrets)
            t.false(
              raw.toLowerCase().includes(secret.toLowerCase()),
              `leaks ${secret.slice(0, 6)}…: ${raw}`,
            );
      },
    );
  },
);

// ------------------------------------------------------------------ the shipped server: SIGHUP

/**
 * The pid of the keygate child serving `dbPath`: the process helper exposes no pid and
 * its stop(signal) waits for an exit, so find this process's child whose environment
 * names that database (Linux /proc).
 * @throws Error when there is none.
 */
function keygatePid(dbPath: string): number {
  const wanted = `KEYGATE_DB=${dbPath}`;
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, "utf8");
      const ppid = Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]);
      if (ppid !== process.pid) continue;
      if (readFileSync(`/proc/${entry}/environ`, "utf8").split("\0").includes(wanted))
        return Number(entry);
    } catch {
      // The process ended while we looked.
    }
  }
  throw new Error(`no keygate child of ${process.pid} serves ${dbPath}`);
}

interface ProcessContext {
  readonly keygate: KeygateProcess;
  readonly client: CheckClient;
  readonly adminUrl: string;
  readonly keystorePath: string;
  readonly pid: number;
}

/**
 * Runs `body` against `node dist/server/cli/main.js serve` on a temp keystore.yaml (run
 * `npm run build` first), then stops it with SIGTERM.
 * @returns the stopped process, whose stop() now resolves with how it exited.
 */
async function withKeygateProcess(
  keystore: string,
  body: (context: ProcessContext) => Promise<void>,
): Promise<KeygateProcess> {
  const dir = mkdtempSync(path.join(tmpdir(), "keygate-live-"));
  const keystorePath = path.join(dir, "keystore.yaml");
  const db = path.join(dir, "data", "keystore.db");
  writeFileSync(keystorePath, keystore, { mode: 0o600 });
  try {
    const keygate = await startKeygate({ keystore: keystorePath, db });
    const client = createCheckClient(`127.0.0.1:${keygate.grpcPort}`);
    try {
      const adminUrl = `http://127.0.0.1:${keygate.adminPort}`;
      await body({ keygate, client, adminUrl, keystorePath, pid: keygatePid(db) });
    } finally {
      client.close();
      await keygate.stop("SIGTERM");
    }
    return keygate;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

const SIGHUP_MESSAGE = "SIGHUP: reloading keystore";

test.serial(
  "SIGHUP reloads on its own, a save plus SIGHUP applies once, and SIGTERM still exits 0",
  async (t) => {
    // The watcher cannot be switched off, so SIGHUP is first sent with the file untouched:
    // the watcher has nothing to report, and the reload counted can only be SIGHUP's.
    const sighups = (keygate: KeygateProcess) =>
      keygate.logLines().filter((line) => line.msg === SIGHUP_MESSAGE).length;
    const stopped = await withKeygateProcess(
      editedKeystore(0),
      async ({ keygate, client, adminUrl, keystorePath, pid }) => {
        t.is(await decisionFor(client, editToken(0)), "allow:edit-0");
        const generation = (await keystoreStatus(adminUrl)).generation;

        const unchanged = await reloadsTotal(adminUrl, "unchanged");
        process.kill(pid, "SIGHUP");
        await waitFor("SIGHUP reload counted", performance.now(), async () => {
          return sighups(keygate) === 1 && (await reloadsTotal(adminUrl, "unchanged")) > unchanged;
        });
        t.deepEqual((await keystoreStatus(adminUrl)).generation, generation, "same bytes");

        // A rename-save and SIGHUP at once: watcher and signal both reload; one generation.
        const applied = await reloadsTotal(adminUrl, "applied");
        renameSave(keystorePath, editedKeystore(1));
        const saved = performance.now();
        process.kill(pid, "SIGHUP");
        const latency = await waitFor("save + SIGHUP live", saved, async () => {
          const [revoked, added] = await Promise.all([
            decisionFor(client, editToken(0)),
            decisionFor(client, editToken(1)),
          ]);
          return revoked === "deny:UNAUTHORIZED" && added === "allow:edit-1";
        });
        assertWithinBound(
          t,
          "built server, save + SIGHUP: revoked denied",
          latency,
          RELOAD_BOUND_MS,
        );
        await waitFor("second SIGHUP logged", performance.now(), () => sighups(keygate) === 2);
        t.is(await reloadsTotal(adminUrl, "applied"), applied + 1, "one apply for one edit");
        t.is((await keystoreStatus(adminUrl)).generation?.id, (generation?.id ?? 0) + 1);

        t.is(await client.health(), "SERVING");
        t.is(await decisionFor(client, STABLE_TOKEN), "allow:alpha");
        t.false((await keystoreStatus(adminUrl)).stale);
      },
    );
    t.deepEqual(await stopped.stop(), { code: 0, signal: null }, stopped.output().slice(-2000));
  },
);

test.serial("on the built server, rename-saves are live within 1 s with no signal", async (t) => {
  // The shipped artefact runs its reload worker from dist/, without the TypeScript loader
  // the in-process tests pay for: this is the latency operators see.
  await withKeygateProcess(editedKeystore(0), async ({ client, keystorePath }) => {
    t.is(await decisionFor(client, editToken(0)), "allow:edit-0");
    for (let n = 1; n <= EDITS_PER_STYLE; n++) {
      renameSave(keystorePath, editedKeystore(n));
      const saved = performance.now();
      const latency = await waitFor(`edit ${n}`, saved, async () => {
        const [revoked, added] = await Promise.all([
          decisionFor(client, editToken(n - 1)),
          decisionFor(client, editToken(n)),
        ]);
        return revoked === "deny:UNAUTHORIZED" && added === `allow:edit-${n}`;
      });
      assertWithinBound(t, `built server, edit ${n}: revoked denied`, latency, RELOAD_BOUND_MS);
    }
  });
});
