/**
 * Watches keystore.yaml for edits. It watches *directories*, not the file: editors save
 * by writing a temp file and renaming it over the original, and Kubernetes swaps a
 * `..data` symlink, so a watch on the file itself would go deaf after the first save.
 * When keystore.yaml is a symlink into another directory, that directory is watched
 * too. Events are debounced (with a ceiling, so a busy neighbour file cannot hold a
 * reload back), then gated by a stat signature (the reload checks the content hash
 * again); a slow poll catches what inotify misses (network file systems, a directory
 * that was replaced or did not exist yet) and re-establishes the watches.
 */
import { type FSWatcher, realpathSync, statSync, watch } from "node:fs";
import path from "node:path";
import type { Logger } from "../../logger.js";

export interface WatcherOptions {
  readonly path: string;
  /** Quiet time after the last event before reloading. */
  readonly debounceMs: number;
  /** Interval of the stat poll that backs up filesystem events. */
  readonly pollMs: number;
  /** Called when the file may have changed; the callee decides by content hash. */
  readonly onChange: () => void;
  readonly logger: Logger;
}

export interface KeystoreWatcher {
  close(): void;
}

/** The longest a stream of events may postpone a check, as a multiple of the debounce. */
const MAX_DEBOUNCE_FACTOR = 4;

function statSignature(file: string): string {
  try {
    const s = statSync(file, { bigint: true });
    return `${s.dev}:${s.ino}:${s.size}:${s.mtimeNs}:${s.ctimeNs}`;
  } catch {
    return "missing";
  }
}

/** Which directory this is: inode numbers are reused at once after rm -rf, birth times are not. */
function directoryIdentity(directory: string): string {
  try {
    const s = statSync(directory, { bigint: true });
    return `${s.dev}:${s.ino}:${s.birthtimeNs}`;
  } catch {
    return "missing";
  }
}

/** The directories whose events can mean the keystore changed: the link's and the target's. */
function directoriesOf(file: string): string[] {
  const own = path.dirname(path.resolve(file));
  let target = own;
  try {
    target = path.dirname(realpathSync(file));
  } catch {
    // Missing for now: its own directory is enough until it appears.
  }
  return target === own ? [own] : [own, target];
}

/** Starts watching; the first change is measured against the file as it is now. */
export function watchKeystore(options: WatcherOptions): KeystoreWatcher {
  let last = statSignature(options.path);
  let timer: NodeJS.Timeout | undefined;
  let firstEventAt = 0;
  /** Watched directory → its watcher and the identity (inode) it had when watched. */
  const watchers = new Map<string, { watcher: FSWatcher; identity: string }>();

  const check = () => {
    if (timer) clearTimeout(timer);
    timer = undefined;
    // A replaced directory or a symlink retargeted elsewhere changes what must be watched.
    syncWatches();
    const now = statSignature(options.path);
    if (now === last) return;
    last = now;
    options.onChange();
  };
  const onEvent = () => {
    const now = Date.now();
    if (!timer) firstEventAt = now;
    else clearTimeout(timer);
    const ceiling = firstEventAt + options.debounceMs * MAX_DEBOUNCE_FACTOR;
    timer = setTimeout(check, Math.max(0, Math.min(options.debounceMs, ceiling - now)));
  };
  const unwatch = (directory: string) => {
    watchers.get(directory)?.watcher.close();
    watchers.delete(directory);
  };
  /** Watches the directories the keystore lives in now; re-watches any that were replaced. */
  const syncWatches = () => {
    const wanted = directoriesOf(options.path);
    for (const directory of [...watchers.keys()])
      if (!wanted.includes(directory)) unwatch(directory);
    for (const directory of wanted) {
      const identity = directoryIdentity(directory);
      const existing = watchers.get(directory);
      if (existing && existing.identity === identity) continue;
      unwatch(directory);
      if (identity === "missing") continue;
      try {
        const watcher = watch(directory, { persistent: false }, onEvent);
        watcher.on("error", (error) => {
          options.logger.warn(
            { err: error, directory },
            "keystore directory watch failed; polling",
          );
          unwatch(directory);
        });
        watchers.set(directory, { watcher, identity });
      } catch {
        // The directory may appear later; the poll retries.
      }
    }
  };

  syncWatches();
  const poll = setInterval(check, options.pollMs);
  poll.unref();
  return {
    close() {
      clearInterval(poll);
      if (timer) clearTimeout(timer);
      for (const directory of [...watchers.keys()]) unwatch(directory);
    },
  };
}
