/**
 * keystore.yaml on disk for the editor: refusing what it must not edit, reading it, and
 * replacing it atomically (a temp file in the same directory, fsync, rename, fsync of the
 * directory), so the running server only ever sees the old file or the new one.
 *
 * The written file is 0600, or 0640 when the original was deliberately group-readable and
 * not world-readable (root:keygate 0640 is how a service account reads a config it may
 * not write; dropping the group bit would make the server keep serving a stale keystore).
 * Owner and group are kept where the OS allows.
 */
import { randomBytes } from "node:crypto";
import {
  closeSync,
  fchmodSync,
  fchownSync,
  fsyncSync,
  lstatSync,
  openSync,
  renameSync,
  type Stats,
  unlinkSync,
  writeFileSync,
} from "node:fs";
import path from "node:path";
import { decodeKeystoreText, readKeystoreBytes } from "../format/load.js";
import { formatIssue, KeystoreError } from "../format/model.js";
import { KeystoreEditError } from "./edit-error.js";

const PRIVATE_MODE = 0o600;
const GROUP_READABLE_MODE = 0o640;

/** What replacing the file did to its permissions and ownership. */
export interface Replaced {
  /** Permission bits of the written file. */
  readonly mode: number;
  /** The bits before, when they differ. */
  readonly previousMode: number | undefined;
  /** Set when the original owner or group could not be kept. */
  readonly ownerNotKept: boolean;
}

/**
 * lstat of the keystore. A symlink (a Kubernetes ConfigMap mount) is refused, not edited
 * through: kubelet would silently put the old content back, and the lock must sit next to
 * the file actually replaced so every editor serialises on the same lock.
 * @throws KeystoreEditError when it is missing, a symlink or not a regular file.
 */
export function statKeystore(file: string): Stats {
  let stats: Stats;
  try {
    stats = lstatSync(file);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "ENOENT") {
      throw new KeystoreEditError(
        `no keystore at ${file}; create one with keygate keystore init (or set --keystore / KEYGATE_KEYSTORE)`,
      );
    }
    throw error;
  }
  if (stats.isSymbolicLink()) {
    throw new KeystoreEditError(
      `${file} is a symlink; keygate edits regular files only. For a Kubernetes ConfigMap, ` +
        "edit the ConfigMap's source and apply it; otherwise point --keystore at the file itself",
    );
  }
  if (!stats.isFile()) throw new KeystoreEditError(`${file} is not a regular file`);
  return stats;
}

/**
 * The keystore's text, decoded as the server and `keygate keystore check` decode it.
 * @throws KeystoreEditError when it cannot be read or is not UTF-8 (located).
 */
export function readKeystore(file: string): string {
  try {
    // Not readKeystoreText: an edit has no use for the file's hash.
    return decodeKeystoreText(readKeystoreBytes(file), file);
  } catch (error) {
    if (error instanceof KeystoreError)
      throw new KeystoreEditError(error.issues.map(formatIssue).join("\n"));
    throw error;
  }
}

/**
 * Replaces `file` with `text`: temp file in the same directory (rename is atomic only
 * within one file system), fsync, rename over the original, fsync the directory so the
 * rename itself survives a crash.
 * @throws Error on an I/O failure; the original is left as it was and no temp file stays.
 */
export function replaceKeystore(file: string, text: string, original: Stats): Replaced {
  const mode = modeFor(original);
  const directory = path.dirname(file);
  const temp = path.join(
    directory,
    `.${path.basename(file)}.${process.pid}.${randomBytes(6).toString("hex")}.tmp`,
  );
  let ownerNotKept = false;
  const fd = openSync(temp, "wx", mode);
  try {
    try {
      writeFileSync(fd, text, "utf8");
      fchmodSync(fd, mode); // the umask may have narrowed the mode given to open
      ownerNotKept = !keepOwner(fd, original);
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    renameSync(temp, file);
  } catch (error) {
    try {
      unlinkSync(temp);
    } catch {
      // already renamed or never created
    }
    throw error;
  }
  fsyncDirectory(directory);
  const previousMode = original.mode & 0o777;
  return { mode, previousMode: previousMode === mode ? undefined : previousMode, ownerNotKept };
}

function modeFor(original: Stats): number {
  const bits = original.mode & 0o777;
  return (bits & 0o040) !== 0 && (bits & 0o007) === 0 ? GROUP_READABLE_MODE : PRIVATE_MODE;
}

/** Gives the new file the original's owner and group; false when the OS refuses. */
function keepOwner(fd: number, original: Stats): boolean {
  if (original.uid === process.getuid?.() && original.gid === process.getgid?.()) return true;
  try {
    fchownSync(fd, original.uid, original.gid);
    return true;
  } catch {
    return false;
  }
}

function fsyncDirectory(directory: string): void {
  let fd: number | undefined;
  try {
    fd = openSync(directory, "r");
    fsyncSync(fd);
  } catch {
    // Some file systems cannot fsync a directory; the rename is still atomic.
  } finally {
    if (fd !== undefined) closeSync(fd);
  }
}
