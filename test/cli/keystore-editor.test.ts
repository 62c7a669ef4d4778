/**
 * The guarantees of keystore-editor itself, in-process: the lock (waiting, timing out,
 * taking over a dead holder's lock), refusing symlinks and broken files, never writing an
 * invalid keystore, and a rewrite that leaves the operator's text alone.
 */
import { spawnSync } from "node:child_process";
import {
  existsSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from "node:fs";
import { hostname, tmpdir } from "node:os";
import path from "node:path";
import test, { type ExecutionContext } from "ava";
import {
  editKeystore,
  KeystoreDraft,
  KeystoreEditError,
  lockPathFor,
} from "../../server/keystore/keystore-editor.js";
import { starterKeystoreText } from "../../server/keystore/starter.js";

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

function lockOwnedBy(pid: number, host = hostname()): string {
  return JSON.stringify({ pid, host, acquired_at: new Date().toISOString(), nonce: "theirs" });
}

/** A pid that belonged to a process which has exited. */
function deadPid(): number {
  const child = spawnSync(process.execPath, ["-e", "process.stdout.write(String(process.pid))"], {
    encoding: "utf8",
  });
  return Number(child.stdout);
}

test("an edit waits for a live holder's lock and gives up after the timeout, naming it", async (t) => {
  const file = tempKeystore(t);
  writeFileSync(lockPathFor(file), lockOwnedBy(process.pid));
  const started = Date.now();
  const error = await t.throwsAsync(
    editKeystore(file, { ...OPTIONS, lockTimeoutMs: 400 }, addClient("second")),
    { instanceOf: KeystoreEditError },
  );
  t.true(Date.now() - started >= 400);
  t.regex(error?.message ?? "", new RegExp(`locked by pid ${process.pid} on `));
  t.regex(error?.message ?? "", /delete .*keystore\.yaml\.lock/);
  t.is(readFileSync(file, "utf8"), VALID);
  t.true(existsSync(lockPathFor(file)), "someone else's lock is never removed");
});

test("an edit proceeds as soon as the holder releases the lock", async (t) => {
  const file = tempKeystore(t);
  writeFileSync(lockPathFor(file), lockOwnedBy(process.pid));
  setTimeout(() => rmSync(lockPathFor(file)), 300);
  const result = await editKeystore(file, OPTIONS, addClient("second"));
  t.true(result.written);
  t.regex(readFileSync(file, "utf8"), /- id: second/);
  t.false(existsSync(lockPathFor(file)));
});

test("a lock left by a dead process is taken over", async (t) => {
  const file = tempKeystore(t);
  writeFileSync(lockPathFor(file), lockOwnedBy(deadPid()));
  const result = await editKeystore(file, { ...OPTIONS, lockTimeoutMs: 2000 }, addClient("second"));
  t.true(result.written);
  t.deepEqual(readdirSync(path.dirname(file)), ["keystore.yaml"]);
});

test("a lock from another host is waited for, not probed by pid", async (t) => {
  const file = tempKeystore(t);
  writeFileSync(lockPathFor(file), lockOwnedBy(deadPid(), "some-other-host"));
  await t.throwsAsync(editKeystore(file, { ...OPTIONS, lockTimeoutMs: 200 }, addClient("second")), {
    message: /locked by pid \d+ on some-other-host/,
  });
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
  t.regex(text, /\n {4}# kind: client[^\n]*\n {2}- id: next\n/);
});
