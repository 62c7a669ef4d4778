/**
 * The keystore watcher on real filesystem events, with the backup poll set far out so
 * that only events can explain a change being seen.
 */
import {
  appendFileSync,
  mkdirSync,
  mkdtempSync,
  renameSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import test from "ava";
import { watchKeystore } from "../../server/keystore/reload/keystore-watcher.js";
import { createLogger } from "../../server/logger.js";

const NO_POLL_MS = 60_000;

function watch(file: string) {
  let changes = 0;
  const watcher = watchKeystore({
    path: file,
    debounceMs: 50,
    pollMs: NO_POLL_MS,
    logger: createLogger("silent"),
    onChange: () => changes++,
  });
  return {
    watcher,
    changes: () => changes,
    async until(count: number, timeoutMs = 3000): Promise<boolean> {
      const deadline = Date.now() + timeoutMs;
      while (Date.now() < deadline) {
        if (changes >= count) return true;
        await new Promise((resolve) => setTimeout(resolve, 10));
      }
      return false;
    },
  };
}

function renameSave(file: string, text: string): void {
  writeFileSync(`${file}.tmp`, text);
  renameSync(`${file}.tmp`, file);
}

test("rename-saves are seen save after save", async (t) => {
  const dir = mkdtempSync(path.join(tmpdir(), "keygate-watch-"));
  const file = path.join(dir, "keystore.yaml");
  writeFileSync(file, "a");
  const w = watch(file);
  try {
    for (let n = 1; n <= 3; n++) {
      renameSave(file, `edit ${n}`);
      t.true(await w.until(n), `save ${n}`);
    }
  } finally {
    w.watcher.close();
  }
});

test("a directory replaced under the watch is watched again", async (t) => {
  const root = mkdtempSync(path.join(tmpdir(), "keygate-watch-"));
  const dir = path.join(root, "mount");
  const file = path.join(dir, "keystore.yaml");
  mkdirSync(dir);
  writeFileSync(file, "a");
  const w = watch(file);
  try {
    rmSync(dir, { recursive: true });
    mkdirSync(dir);
    writeFileSync(file, "b");
    t.true(await w.until(1), "the replacement is seen");
    const before = w.changes();
    renameSave(file, "c");
    t.true(await w.until(before + 1), "an edit in the new directory is seen without the poll");
  } finally {
    w.watcher.close();
  }
});

test("a keystore.yaml symlinked into another directory is watched where its target lives", async (t) => {
  const root = mkdtempSync(path.join(tmpdir(), "keygate-watch-"));
  mkdirSync(path.join(root, "config"));
  mkdirSync(path.join(root, "repo"));
  const target = path.join(root, "repo", "keystore.yaml");
  const link = path.join(root, "config", "keystore.yaml");
  writeFileSync(target, "a");
  symlinkSync(target, link);
  const w = watch(link);
  try {
    renameSave(target, "b");
    t.true(await w.until(1));
  } finally {
    w.watcher.close();
  }
});

test("a busy neighbour file cannot hold a reload back", async (t) => {
  const dir = mkdtempSync(path.join(tmpdir(), "keygate-watch-"));
  const file = path.join(dir, "keystore.yaml");
  writeFileSync(file, "a");
  const w = watch(file);
  const noisy = setInterval(() => appendFileSync(path.join(dir, "app.log"), "x\n"), 10);
  try {
    await new Promise((resolve) => setTimeout(resolve, 100));
    const saved = Date.now();
    renameSave(file, "b");
    t.true(await w.until(1, 2000));
    t.true(Date.now() - saved < 1000, `seen after ${Date.now() - saved} ms`);
  } finally {
    clearInterval(noisy);
    w.watcher.close();
  }
});

test("unchanged bytes rewritten in place still reach the callee (it decides by hash)", async (t) => {
  const dir = mkdtempSync(path.join(tmpdir(), "keygate-watch-"));
  const file = path.join(dir, "keystore.yaml");
  writeFileSync(file, "same");
  const w = watch(file);
  try {
    await new Promise((resolve) => setTimeout(resolve, 20));
    writeFileSync(file, "same");
    t.true(await w.until(1));
  } finally {
    w.watcher.close();
  }
});
