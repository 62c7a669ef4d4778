/**
 * `keygate keystore rotate` and `revoke`: the commands that replace or remove a client's
 * tokens. `rotate` prints only the new token on stdout; everything else goes to stderr.
 */
import { loadConfig } from "../config.js";
import { mintToken } from "../crypto/token-format.js";
import { hashToken } from "../crypto/token-hash.js";
import {
  type ClientDraft,
  editKeystore,
  KeystoreEditError,
} from "../keystore/edit/keystore-editor.js";
import { keystorePath, note, out, parseCommand, stringValue } from "./args.js";
import {
  clientIdArgument,
  editOptions,
  KEYSTORE_OPTION,
  plural,
  reportWrite,
} from "./keystore-command-shared.js";
import { formatTimestamp, parseDuration, parseExpiry, timestampValue } from "./time-args.js";

/** At least 8 hex characters, so a slip of the keyboard cannot match a token by chance. */
const DIGEST_PREFIX = /^[0-9a-fA-F]{8,64}$/;

/** One rotation as `rotate` decided it before taking the lock. */
interface Rotation {
  readonly now: number;
  readonly graceMs: number;
  /** RFC 3339: when old tokens stop working, if `graceMs` > 0. */
  readonly graceEnd: string;
  readonly token: string;
  readonly expires: string | undefined;
}

/** What a rotation did to the old tokens. */
interface RotationCounts {
  readonly removed: number;
  readonly expiring: number;
  readonly kept: number;
  readonly disabled: boolean;
}

/**
 * Gives a client a fresh token; old ones go now or expire after `--grace`. Prints the new
 * token (once) on stdout.
 * @throws UsageError on malformed arguments; Error for a bad value, an unknown client or a refused edit.
 */
export async function rotate(args: readonly string[], env: NodeJS.ProcessEnv): Promise<number> {
  const parsed = parseCommand(
    "keystore rotate",
    args,
    { ...KEYSTORE_OPTION, grace: { type: "string" }, expires: { type: "string" } },
    ["id"],
  );
  const id = clientIdArgument(parsed);
  const now = Date.now();
  const graceText = stringValue(parsed, "grace");
  const graceMs = graceText === undefined ? 0 : parseDuration("grace", graceText);
  const expiresText = stringValue(parsed, "expires");
  const expires =
    expiresText === undefined
      ? undefined
      : formatTimestamp(parseExpiry("expires", expiresText, now));
  const config = loadConfig(env);
  const token = mintToken();
  const path = keystorePath(parsed, env);
  const graceEnd = formatTimestamp(now + graceMs);
  const rotation: Rotation = { now, graceMs, graceEnd, token, expires };
  const result = await editKeystore(path, editOptions(config, env), (draft) =>
    rotateTokens(draft.client(id), rotation),
  );
  reportWrite(path, result);
  const parts = rotationParts(result.value, graceEnd);
  note(`rotated client "${id}" in ${path}${parts.length > 0 ? `: ${parts.join("; ")}` : ""}.`);
  if (result.value.disabled) {
    note(`note: client "${id}" is disabled; the new token works once it is enabled.`);
  }
  note("its new token (shown once):");
  out(token);
  return 0;
}

/** The edit itself: expires or removes the old tokens, adds the new one. */
function rotateTokens(client: ClientDraft, rotation: Rotation): RotationCounts {
  const { now, graceMs, graceEnd, token, expires } = rotation;
  const old = client.tokens().map((entry, index) => ({
    index,
    expiresAt: entry.expires === undefined ? Number.NaN : timestampValue(entry.expires),
    hasExpiry: entry.expires !== undefined,
  }));
  // Already expired: they authenticate nothing, so rotation clears them out.
  const expired = old.filter((entry) => entry.hasExpiry && entry.expiresAt <= now);
  const live = old.filter((entry) => !expired.includes(entry));
  let expiring = 0;
  if (graceMs > 0) {
    const end = timestampValue(graceEnd);
    for (const entry of live) {
      // Never extend: a token already due to expire before the grace ends keeps its date.
      if (entry.hasExpiry && entry.expiresAt <= end) continue;
      client.setTokenExpiry(entry.index, graceEnd);
      expiring++;
    }
  }
  // Grace 0 removes the old tokens rather than expiring them "now": no dependence on the
  // server's clock agreeing with this machine's, and nothing left to clean up later.
  const removed = graceMs > 0 ? expired : old;
  client.removeTokens(removed.map((entry) => entry.index));
  client.addToken({ sha256: hashToken(token), ...(expires === undefined ? {} : { expires }) });
  return {
    removed: removed.length,
    expiring,
    kept: graceMs > 0 ? live.length - expiring : 0,
    disabled: client.disabled,
  };
}

/** The rotation's effect on the old tokens, as phrases for the operator. */
function rotationParts(counts: RotationCounts, graceEnd: string): string[] {
  const { removed, expiring, kept } = counts;
  return [
    ...(removed > 0 ? [`removed ${plural(removed, "old token")}`] : []),
    ...(expiring > 0 ? [`${plural(expiring, "old token")} ${verb(expiring)} at ${graceEnd}`] : []),
    ...(kept > 0 ? [`${plural(kept, "old token")} already ${verb(kept)} sooner`] : []),
  ];
}

function verb(count: number): string {
  return count === 1 ? "expires" : "expire";
}

/**
 * Removes all of a client's tokens, or the one whose SHA-256 starts with `--token`.
 * @throws UsageError on malformed arguments; Error for a bad prefix, no or several matches, or a refused edit.
 */
export async function revoke(args: readonly string[], env: NodeJS.ProcessEnv): Promise<number> {
  const parsed = parseCommand(
    "keystore revoke",
    args,
    { ...KEYSTORE_OPTION, token: { type: "string" } },
    ["id"],
  );
  const id = clientIdArgument(parsed);
  const prefix = stringValue(parsed, "token")?.toLowerCase();
  if (prefix !== undefined && !DIGEST_PREFIX.test(prefix)) {
    throw new Error(
      "--token takes the first 8 to 64 hex characters of the token's SHA-256 (keygate keystore list --json shows 12; keygate hash prints it)",
    );
  }
  const config = loadConfig(env);
  const path = keystorePath(parsed, env);
  const result = await editKeystore(path, editOptions(config, env), (draft) => {
    const client = draft.client(id);
    const tokens = client.tokens();
    const doomed = tokens
      .map((entry, index) => ({ entry, index }))
      .filter(({ entry }) => prefix === undefined || entry.digest.startsWith(prefix));
    if (prefix !== undefined && doomed.length === 0) {
      throw new KeystoreEditError(
        `client "${id}" has no token whose SHA-256 starts with ${prefix}`,
      );
    }
    if (prefix !== undefined && doomed.length > 1) {
      throw new KeystoreEditError(
        `${prefix} matches ${doomed.length} tokens of client "${id}"; give more characters of the SHA-256`,
      );
    }
    client.removeTokens(doomed.map(({ index }) => index));
    return doomed.length;
  });
  reportWrite(path, result);
  note(`revoked ${plural(result.value, "token")} of client "${id}" in ${path}.`);
  return 0;
}
