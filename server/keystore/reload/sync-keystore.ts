/**
 * One keystore sync: read keystore.yaml, skip it when its bytes are unchanged, validate
 * it, and apply it to SQLite as a new generation. Runs inside the reload worker so a
 * large file never blocks the Check path; plain data in, plain data out. What does not
 * decide the new generation (upstream-key warnings, the change report) is left for
 * after the outcome is reported, so a revocation never waits for it.
 */
import type { MasterKeys } from "../../crypto/aes-gcm.js";
import {
  decodeKeystoreText,
  readKeystoreBytes,
  sha256Hex,
  type ValidatedKeystore,
  validateKeystore,
} from "../format/load.js";
import {
  formatIssue,
  type Generation,
  KeystoreError,
  type KeystoreIssue,
} from "../format/model.js";
import type { SealedKeyChecks } from "../format/upstream-key-warnings.js";
import type { KeystoreChanges, KeystoreStore } from "../store/store.js";

export interface SyncRequest {
  readonly path: string;
  readonly masterKeys: MasterKeys;
  readonly env: Readonly<Record<string, string | undefined>>;
  readonly requireClients: boolean;
  /** KEYGATE_UPSTREAM_ENV_PREFIX: `env:` names without it make the file invalid. */
  readonly upstreamEnvPrefix: string | null;
  /** Hash of the bytes last seen (valid or not); the same bytes are not decided twice. */
  readonly lastSeenSha256: string | null;
}

export type SyncOutcome =
  | {
      readonly result: "applied";
      readonly generation: Generation;
      readonly sourceSha256: string;
    }
  | { readonly result: "unchanged"; readonly sourceSha256: string }
  | {
      readonly result: "failed";
      readonly sourceSha256: string | null;
      readonly issues: readonly KeystoreIssue[];
    };

export interface SyncRun {
  readonly outcome: SyncOutcome;
  /**
   * The applied keystore's upstream-key warnings, formatted (none for other outcomes).
   * Computed on call: a decrypt per `enc:` value, so after the outcome has been reported.
   */
  readonly warnings: () => readonly string[];
  /**
   * What an applied keystore changed against the generation served before it, for the
   * reload's log; null when nothing was written or nothing was served before (a first
   * sync would list every client).
   */
  readonly changes: KeystoreChanges | null;
}

const NO_WARNINGS = (): readonly string[] => [];

/**
 * Syncs keystore.yaml into the store.
 * Never throws for a bad file (that is a "failed" outcome with located issues).
 * @throws Error on SQLite failure.
 */
export function syncKeystoreFile(
  store: KeystoreStore,
  request: SyncRequest,
  now: Date,
  sealedKeyChecks?: SealedKeyChecks,
): SyncRun {
  const failed = (sourceSha256: string | null, issues: readonly KeystoreIssue[]): SyncRun => ({
    outcome: { result: "failed", sourceSha256, issues },
    warnings: NO_WARNINGS,
    changes: null,
  });
  let bytes: Buffer;
  try {
    bytes = readKeystoreBytes(request.path);
  } catch (error) {
    if (error instanceof KeystoreError) return failed(null, error.issues);
    throw error;
  }
  const sourceSha256 = sha256Hex(bytes);
  if (sourceSha256 === request.lastSeenSha256) {
    return {
      outcome: { result: "unchanged", sourceSha256 },
      warnings: NO_WARNINGS,
      changes: null,
    };
  }
  let validated: ValidatedKeystore;
  try {
    // Decoded as `keygate keystore check` decodes it: the server never serves a file the CLI refuses.
    validated = validateKeystore(
      decodeKeystoreText(bytes, request.path),
      {
        file: request.path,
        masterKeys: request.masterKeys,
        env: request.env,
        requireClients: request.requireClients,
        upstreamEnvPrefix: request.upstreamEnvPrefix,
        ...(sealedKeyChecks === undefined ? {} : { sealedKeyChecks }),
      },
      sourceSha256,
    );
  } catch (error) {
    if (error instanceof KeystoreError) return failed(sourceSha256, error.issues);
    throw error;
  }
  const { loaded } = validated;
  const current = store.refresh();
  const warnings = () => validated.upstreamKeyWarnings().map(formatIssue);
  // The bytes of the newest generation (as after a restart): nothing to write.
  if (current?.sourceSha256 === loaded.sourceSha256) {
    return {
      outcome: { result: "applied", generation: current, sourceSha256 },
      warnings,
      changes: null,
    };
  }
  const { generation, changes } = store.apply(loaded, now);
  return {
    outcome: { result: "applied", generation, sourceSha256 },
    warnings,
    changes: current === undefined ? null : changes,
  };
}
