/**
 * Watches keystore.yaml for edits. It watches the *directory*, not the file: editors
 * save by writing a temp file and renaming it over the original, and Kubernetes swaps a
 * `..data` symlink, so a watch on the file itself would go deaf after the first save.
 * Events are debounced, then gated by a stat signature (the content hash is checked
 * again by the reload itself); a slow poll catches what inotify misses (network file
 * systems, a directory that did not exist yet).
 */
import { type FSWatcher, statSync, watch } from "node:fs";
import path from "node:path";
import type { Logger } from "../logger.js";

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

/** Identity and size of what the path resolves to now (through symlinks), or "missing". */
function signature(file: string): string {
  try {
    const s = statSync(file, { bigint: true });
    return `${s.dev}:${s.ino}:${s.size}:${s.mtimeNs}:${s.ctimeNs}`;
  } catch {
    return "missing";
  }
}

/** Starts watching; the first change is measured against the file as it is now. */
export function watchKeystore(options: WatcherOptions): KeystoreWatcher {
  const directory = path.dirname(path.resolve(options.path));
  let last = signature(options.path);
  let timer: NodeJS.Timeout | undefined;
  let watcher: FSWatcher | undefined;

  const check = () => {
    timer = undefined;
    const now = signature(options.path);
    if (now === last) return;
    last = now;
    options.onChange();
  };
  const schedule = () => {
    if (timer) clearTimeout(timer);
    timer = setTimeout(check, options.debounceMs);
  };
  const startWatching = () => {
    try {
      watcher = watch(directory, { persistent: false }, schedule);
      watcher.on("error", (error) => {
        options.logger.warn({ err: error, directory }, "keystore directory watch failed; polling");
        watcher?.close();
        watcher = undefined;
      });
    } catch {
      watcher = undefined; // the directory may appear later; the poll retries.
    }
  };

  startWatching();
  const poll = setInterval(() => {
    if (!watcher) startWatching();
    check();
  }, options.pollMs);
  poll.unref();

  return {
    close() {
      clearInterval(poll);
      if (timer) clearTimeout(timer);
      watcher?.close();
    },
  };
}
