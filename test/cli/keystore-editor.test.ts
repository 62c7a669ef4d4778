/**
 * The guarantees of keystore-editor itself, in-process: the lock (waiting, timing out,
 * taking over a dead holder's lock, never writing or releasing once it is lost), refusing
 * symlinks and broken files, never writing an invalid keystore, and a rewrite that leaves
 * the operator's text alone.
 */
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmdirSync,
  rmSync,
  symlinkSync,
  utimesSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import test, { type ExecutionContext } from "ava";
import {
  editKeystore,
  KeystoreDraft,
  KeystoreEditError,
  lockPathFor,
} from "../../server/keystore/edit/keystore-editor.js";
import { starterKeystoreText } from "../../server/keystore/format/starter.js";

const OPTIONS = { masterKeys: new Map(), env: {}, requireClients: true } as const;
const DIGEST = "a".repeat(64);
const VALID = `version: 1\nclients:\n  - id: first\n    tokens:\n      - sha256: ${DIGEST}\n`;

function tempKeystore(t: ExecutionContext, text = VALID): string {
  const dir = mkdtempSync(path.join(tmpdir(), "keygate-editor-"));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const file = path.join(dir, "keystore.yaml");
  writeFileSync(file, text, { mode: 0o600 });
  return file;
}

const addClient = (id: string) => (draft: KeystoreDraft) =>
  draft.addClient({ id, tokens: [{ sha256: id.padEnd(64, "0").replace(/[^0-9a-f]/g, "b") }] });

/** A lock as another editor holds it: proper-lockfile's directory, last refreshed `ageMs` ago. */
function holdLock(file: string, ageMs = 0): string {
  const lockPath = lockPathFor(file);
  mkdirSync(lockPath);
  const refreshed = new Date(Date.now() - ageMs);
  utimesSync(lockPath, refreshed, refreshed);
  return lockPath;
}

test("an edit waits for a held lock and gives up after the timeout, saying what to do", async (t) => {
  const file = tempKeystore(t);
  const lockPath = holdLock(file);
  const started = Date.now();
  const error = await t.throwsAsync(
    editKeystore(file, { ...OPTIONS, lockTimeoutMs: 400 }, addClient("second")),
    { instanceOf: KeystoreEditError },
  );
  t.true(Date.now() - started >= 400);
  t.regex(error?.message ?? "", /keystore\.yaml is locked by another keygate command since \d{4}-/);
  t.regex(
    error?.message ?? "",
    /gave up after 0\.4 s\. If no keygate command is running, delete .*keystore\.yaml\.lock$/,
  );
  t.is(readFileSync(file, "utf8"), VALID);
  t.true(existsSync(lockPath), "someone else's lock is never removed");
});

test("an edit proceeds as soon as the holder releases the lock", async (t) => {
  const file = tempKeystore(t);
  const lockPath = holdLock(file);
  setTimeout(() => rmdirSync(lockPath), 300);
  const result = await editKeystore(file, OPTIONS, addClient("second"));
  t.true(result.written);
  t.regex(readFileSync(file, "utf8"), /- id: second/);
  t.false(existsSync(lockPath));
});

test("a lock nobody has refreshed for a while (a dead holder, on any host) is taken over", async (t) => {
  const file = tempKeystore(t);
  holdLock(file, 10 * 60_000);
  const result = await editKeystore(file, { ...OPTIONS, lockTimeoutMs: 2000 }, addClient("second"));
  t.true(result.written);
  t.deepEqual(readdirSync(path.dirname(file)), ["keystore.yaml"]);
});

test("a lock refreshed recently is waited for, however long ago it was taken", async (t) => {
  const file = tempKeystore(t);
  const lockPath = holdLock(file, 5_000);
  await t.throwsAsync(editKeystore(file, { ...OPTIONS, lockTimeoutMs: 200 }, addClient("second")), {
    message: /is locked by another keygate command/,
  });
  t.true(existsSync(lockPath));
});

test("an edit whose lock was taken over meanwhile writes nothing and leaves the new lock alone", async (t) => {
  const file = tempKeystore(t);
  const lockPath = lockPathFor(file);
  const error = await t.throwsAsync(
    editKeystore(file, OPTIONS, (draft) => {
      // What another editor does when it judges this edit's lock stale: remove it, take its own.
      rmdirSync(lockPath);
      mkdirSync(lockPath);
      addClient("second")(draft);
    }),
    { instanceOf: KeystoreEditError },
  );
  t.regex(
    error?.message ?? "",
    /lost the lock .*keystore\.yaml\.lock to another process, so nothing was written/,
  );
  t.is(readFileSync(file, "utf8"), VALID);
  t.true(existsSync(lockPath), "the new holder's lock is not released by the loser");
});

test("concurrent edits in one process are serialised and all land", async (t) => {
  const file = tempKeystore(t);
  const ids = ["c1", "c2", "c3", "c4", "c5"];
  await Promise.all(ids.map((id) => editKeystore(file, OPTIONS, addClient(id))));
  const text = readFileSync(file, "utf8");
  for (const id of ids) t.regex(text, new RegExp(`- id: ${id}\\n`));
  t.deepEqual(readdirSync(path.dirname(file)), ["keystore.yaml"]);
});

test("an edit that would make the keystore invalid is not written, and leaves no files", async (t) => {
  const file = tempKeystore(t);
  const error = await t.throwsAsync(
    editKeystore(file, OPTIONS, (draft) => draft.removeClient("first")),
    { instanceOf: KeystoreEditError },
  );
  t.regex(error?.message ?? "", /would leave .* invalid, so nothing was written/);
  t.regex(error?.details.join("\n") ?? "", /clients: is empty/);
  t.is(readFileSync(file, "utf8"), VALID);
  t.deepEqual(readdirSync(path.dirname(file)), ["keystore.yaml"]);
});

test("an edit function that throws writes nothing and releases the lock", async (t) => {
  const file = tempKeystore(t);
  await t.throwsAsync(
    editKeystore(file, OPTIONS, (draft) => draft.client("nobody")),
    { message: /no client "nobody"/ },
  );
  t.false(existsSync(lockPathFor(file)));
});

test("an edit that changes nothing does not touch the file", async (t) => {
  const file = tempKeystore(t, VALID.replace("clients:", "clients:   # odd spacing"));
  const result = await editKeystore(file, OPTIONS, (draft) =>
    draft.client("first").setDisabled(false),
  );
  t.false(result.written);
  t.is(readFileSync(file, "utf8"), VALID.replace("clients:", "clients:   # odd spacing"));
});

test("an empty defaults: gets the default upstream key instead of a second defaults:", async (t) => {
  const file = tempKeystore(t, VALID.replace("clients:", "defaults:\nclients:"));
  const result = await editKeystore(file, OPTIONS, (draft) =>
    draft.setDefaultUpstreamKey("env:UPSTREAM_KEY"),
  );
  t.true(result.written);
  t.regex(
    readFileSync(file, "utf8"),
    /^version: 1\ndefaults:\n {2}upstream_key: env:UPSTREAM_KEY\nclients:/,
  );
});

test("a symlinked keystore is refused with a clear message", async (t) => {
  const target = tempKeystore(t);
  const link = path.join(path.dirname(target), "linked.yaml");
  symlinkSync(target, link);
  await t.throwsAsync(editKeystore(link, OPTIONS, addClient("second")), {
    message: /linked\.yaml is a symlink; keygate edits regular files only.*ConfigMap/,
  });
  t.is(readFileSync(target, "utf8"), VALID);
});

test("a keystore that is not YAML is refused before any edit", async (t) => {
  const file = tempKeystore(t, "version: 1\nclients: [\n");
  await t.throwsAsync(editKeystore(file, OPTIONS, addClient("second")), {
    message: /is not valid YAML; fix it first/,
  });
});

test("the rewrite is byte-identical for the starter keystore and common layouts", (t) => {
  const layouts = {
    starter: starterKeystoreText(DIGEST),
    "sequences level with their key": `version: 1\nclients:\n- id: a\n  tokens:\n  - sha256: ${DIGEST}\n`,
    "four-space indentation": `version: 1\nclients:\n    - id: a\n      tokens:\n          - sha256: ${DIGEST}\n`,
    "padded flow lists": `version: 1\nclients:\n  - id: a\n    tokens: [ { sha256: ${DIGEST} } ]\n    routes: [ /v1/ ]\n`,
    "comments with blank lines": `version: 1\nclients:\n  - id: a\n    tokens:\n      - sha256: ${DIGEST}\n    # one\n\n    # two\n# end\n`,
  };
  for (const [name, text] of Object.entries(layouts)) {
    t.is(KeystoreDraft.parse(text, "k.yaml").toString(), text, name);
  }
});

test("trailing comments stay with the client their indentation gives them to", (t) => {
  const draft = KeystoreDraft.parse(starterKeystoreText(DIGEST), "k.yaml");
  draft.client("demo").setDisabled(true);
  draft.addClient({ id: "next", tokens: [{ sha256: "b".repeat(64) }] });
  const text = draft.toString();
  // The starter's commented-out fields stay at the client's indentation, after its fields,
  // so uncommenting one still gives a valid keystore.
  t.regex(text, /\n {4}disabled: true\n {4}# upstream_key: env:ANTHROPIC_API_KEY/);
  t.regex(text, /\n {4}# budget: [^\n]*\n {2}- id: next\n/);
});
