/**
 * The edit lock: proper-lockfile's `<file>.lock` directory, so concurrent CLI runs never
 * lose one another's edit, with a guard that keeps a lock's removal to its own holder.
 */
import fs from "node:fs";
import { setTimeout as sleep } from "node:timers/promises";
import { KeystoreEditError } from "./edit-error.js";

/**
 * A lock nobody has refreshed for this long belongs to a dead process and is taken over.
 * An edit runs synchronously from reading the file to writing it, so its holder cannot
 * refresh the lock meanwhile: this must outlast the longest edit (a 100 000-client
 * keystore takes about 30 s on a busy 2-core machine; an editor that overruns it and is
 * taken over writes nothing, see HeldLock.assertHeld).
 */
const LOCK_STALE_MS = 45_000;
/**
 * Give up when the lock has had the same holder this long. The clock restarts when the
 * holder changes: ten queued edits of a large keystore are progress, not a stuck lock.
 * Longer than LOCK_STALE_MS, so a waiter outlasts a dead holder's lock and takes it over.
 */
const LOCK_TIMEOUT_MS = LOCK_STALE_MS + 10_000;
const LOCK_BACKOFF_FIRST_MS = 10;
const LOCK_BACKOFF_MAX_MS = 250;

export interface HeldLock {
  /** @throws KeystoreEditError when the lock is no longer ours. */
  assertHeld(): void;
  release(): Promise<void>;
}

/** Exposed for tests: the lock path for a keystore. */
export function lockPathFor(file: string): string {
  return `${file}.lock`;
}

/**
 * Takes `<file>.lock` with proper-lockfile (an atomic mkdir, its mtime refreshed while
 * held), retrying with backoff and jitter. A lock nobody has refreshed for LOCK_STALE_MS
 * was left by a dead process, on this host or another, and is taken over; a fresh one is
 * waited for.
 * @throws KeystoreEditError when one holder has kept the lock for timeoutMs, or the lock
 *   cannot be created at all.
 */
export async function acquireLock(file: string, timeoutMs = LOCK_TIMEOUT_MS): Promise<HeldLock> {
  // Loaded here, not at the top: proper-lockfile hooks process exit and signals (to release
  // its locks), and the server's entry point imports the editor too.
  const { lock } = await import("proper-lockfile");
  const lockPath = lockPathFor(file);
  const guard = new LockGuard(lockPath);
  let compromised = false;
  const options = {
    stale: LOCK_STALE_MS,
    realpath: false, // the caller has refused symlinks
    fs: guard.fs,
    // The default throws from a timer; assertHeld checks the flag instead.
    onCompromised: () => {
      compromised = true;
    },
  };
  let deadline = Date.now() + timeoutMs;
  let lastHolder: string | undefined;
  let wait = LOCK_BACKOFF_FIRST_MS;
  for (;;) {
    const release = await lock(file, options).catch(unlessLocked(lockPath));
    if (release !== undefined) {
      return {
        assertHeld() {
          if (compromised || !guard.holds()) throw lostLock(lockPath);
        },
        async release() {
          await release().catch(() => {}); // already released when compromised
        },
      };
    }
    const holder = lockIdentity(lockPath);
    if (holder !== undefined && holder.id !== lastHolder) {
      lastHolder = holder.id;
      deadline = Date.now() + timeoutMs;
    }
    if (Date.now() >= deadline) throw lockedTooLong(file, lockPath, holder, timeoutMs);
    // Jitter so ten waiting processes do not retry in lock step.
    await sleep(Math.min(wait, Math.max(0, deadline - Date.now())) * (0.5 + Math.random()));
    wait = Math.min(wait * 1.6, LOCK_BACKOFF_MAX_MS);
  }
}

/** A rejection handler: undefined when someone else holds the lock, a refusal otherwise. */
function unlessLocked(lockPath: string): (error: unknown) => undefined {
  return (error) => {
    const code = error instanceof Error && "code" in error ? error.code : undefined;
    if (code === "ELOCKED") return undefined;
    const reason = code ?? (error instanceof Error ? error.message : String(error));
    throw new KeystoreEditError(`cannot create the lock ${lockPath}: ${reason}`);
  };
}

function lostLock(lockPath: string): KeystoreEditError {
  return new KeystoreEditError(
    `lost the lock ${lockPath} to another process, so nothing was written; run the command again`,
  );
}

function lockedTooLong(
  file: string,
  lockPath: string,
  holder: LockIdentity | undefined,
  timeoutMs: number,
): KeystoreEditError {
  const since = holder === undefined ? "" : ` since ${new Date(holder.takenMs).toISOString()}`;
  return new KeystoreEditError(
    `${file} is locked by another keygate command${since}; gave up after ${timeoutMs / 1000} s. ` +
      `If no keygate command is running, delete ${lockPath}`,
  );
}

/**
 * proper-lockfile removes a lock directory by path: on release, at exit, and when it has
 * judged a lock stale. Through this guard's `fs` it removes only the directory it created
 * or one that is still stale when removed, so two waiters that both judged a lock stale
 * cannot delete the one the faster has just taken (moxystudio/node-proper-lockfile#121),
 * and an editor that lost its lock never deletes its successor's.
 */
class LockGuard {
  readonly #lockPath: string;
  /** Identity of the lock directory this editor created, once it has. */
  #ours: string | undefined;
  /** What proper-lockfile is given as its `fs`: node:fs with mkdir and rmdir guarded. */
  readonly fs: object;

  constructor(lockPath: string) {
    this.#lockPath = lockPath;
    const removable = (target: string) => {
      const now = lockIdentity(target);
      return now === undefined || now.id === this.#ours || Date.now() - now.mtimeMs > LOCK_STALE_MS;
    };
    this.fs = {
      ...fs,
      mkdir: (target: string, callback: (error: Error | null) => void) =>
        fs.mkdir(target, (error) => {
          if (error === null) this.#ours = lockIdentity(target)?.id;
          callback(error);
        }),
      // Declining is reported as "already gone": proper-lockfile then tries mkdir again.
      rmdir: (target: string, callback: (error: Error | null) => void) =>
        removable(target) ? fs.rmdir(target, callback) : callback(null),
      rmdirSync: (target: string) => {
        if (removable(target)) fs.rmdirSync(target);
      },
    };
  }

  /** Whether the lock directory in place is still the one this editor created. */
  holds(): boolean {
    return this.#ours !== undefined && lockIdentity(this.#lockPath)?.id === this.#ours;
  }
}

interface LockIdentity {
  /** Inode and birth time: a lock removed and re-created by someone else is a new identity. */
  readonly id: string;
  /** When it was created (its last refresh where the file system keeps no birth time). */
  readonly takenMs: number;
  readonly mtimeMs: number;
}

function lockIdentity(lockPath: string): LockIdentity | undefined {
  try {
    const stats = fs.statSync(lockPath, { bigint: true });
    return {
      id: `${stats.ino}:${stats.birthtimeNs}`,
      takenMs: Number(stats.birthtimeMs || stats.mtimeMs),
      mtimeMs: Number(stats.mtimeMs),
    };
  } catch {
    return undefined; // released meanwhile
  }
}
