/**
 * The keystore's lifecycle: load keystore.yaml, validate it, apply it to SQLite as a new
 * generation, and keep serving the last good generation when an edit is invalid or the
 * file disappears. The Check path reads only `generationId`, `lookup` and `upstreamKeys`.
 */
import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import type { MasterKeys } from "../crypto/aes-gcm.js";
import type { Logger } from "../logger.js";
import { parseKeystore } from "./load.js";
import type { KeystoreStore } from "./store.js";
import {
  formatIssue,
  type Generation,
  KeystoreError,
  type KeystoreIssue,
  type TokenMatch,
} from "./types.js";
import { UpstreamKeyResolver } from "./upstream-keys.js";

export interface KeystoreManagerOptions {
  readonly path: string;
  readonly masterKeys: MasterKeys;
  readonly env: Readonly<Record<string, string | undefined>>;
  /** Enforce mode: an empty client list is an error. */
  readonly requireClients: boolean;
  readonly logger: Logger;
}

export type ReloadOutcome =
  | { readonly result: "applied"; readonly generation: Generation }
  | { readonly result: "unchanged" }
  | { readonly result: "failed"; readonly issues: readonly KeystoreIssue[] };

export interface KeystoreStatus {
  readonly generation: Generation | null;
  /** True when the generation served is not what keystore.yaml says now (missing or invalid file). */
  readonly stale: boolean;
  readonly lastError: { readonly at: string; readonly issues: readonly string[] } | null;
  readonly lastReloadAt: string | null;
  readonly warnings: readonly string[];
}

function sha256(bytes: Buffer): string {
  return createHash("sha256").update(bytes).digest("hex");
}

export class KeystoreManager {
  /** Current generation id for the hot path; null until one is loaded. */
  generationId: number | null;
  readonly upstreamKeys: UpstreamKeyResolver;
  private generation: Generation | null;
  private stale = false;
  private lastError: KeystoreStatus["lastError"] = null;
  private lastReloadAt: string | null = null;
  private warnings: readonly string[] = [];
  /** Hash of the file bytes last read, valid or not; null after a read failure. */
  private lastSeenSha256: string | null = null;

  constructor(
    private readonly store: KeystoreStore,
    private readonly options: KeystoreManagerOptions,
  ) {
    this.generation = store.current() ?? null;
    this.generationId = this.generation?.id ?? null;
    this.upstreamKeys = new UpstreamKeyResolver(options.masterKeys, options.env);
  }

  /** Looks a digest up in the current generation. */
  lookup(digest: string): TokenMatch | undefined {
    return this.store.lookup(digest);
  }

  /**
   * Reads keystore.yaml and, when it changed and is valid, applies it as a new generation.
   * An invalid or missing file never replaces the last good generation.
   */
  reload(now: Date = new Date()): ReloadOutcome {
    this.lastReloadAt = now.toISOString();
    let bytes: Buffer;
    try {
      bytes = readFileSync(this.options.path);
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code ?? "error";
      const message = code === "ENOENT" ? "file not found" : `cannot read file (${code})`;
      this.lastSeenSha256 = null;
      return this.fail([{ file: this.options.path, line: 1, column: 1, message }], now);
    }
    const sourceSha256 = sha256(bytes);
    // Editors and ConfigMap swaps fire several events per save; the same bytes are decided once.
    if (sourceSha256 === this.lastSeenSha256) return { result: "unchanged" };
    this.lastSeenSha256 = sourceSha256;
    try {
      const loaded = parseKeystore(bytes.toString("utf8"), {
        file: this.options.path,
        masterKeys: this.options.masterKeys,
        env: this.options.env,
        requireClients: this.options.requireClients,
      });
      this.warnings = loaded.warnings.map(formatIssue);
      for (const warning of this.warnings)
        this.options.logger.warn({ file: this.options.path }, warning);
      const generation =
        this.generation?.sourceSha256 === loaded.sourceSha256
          ? this.generation
          : this.store.apply(loaded, now);
      return this.succeed(generation);
    } catch (error) {
      if (error instanceof KeystoreError) return this.fail(error.issues, now);
      throw error;
    }
  }

  /** What /keystore shows: no secrets. */
  status(): KeystoreStatus {
    return {
      generation: this.generation,
      stale: this.stale,
      lastError: this.lastError,
      lastReloadAt: this.lastReloadAt,
      warnings: this.warnings,
    };
  }

  private succeed(generation: Generation): ReloadOutcome {
    const changed = generation.id !== this.generationId;
    this.generation = generation;
    this.generationId = generation.id;
    this.stale = false;
    this.lastError = null;
    if (changed) this.upstreamKeys.clear();
    this.options.logger.info(
      {
        generation: generation.id,
        clients: generation.clientCount,
        source_sha256: generation.sourceSha256,
      },
      changed ? "keystore generation applied" : "keystore validated; generation unchanged",
    );
    return { result: "applied", generation };
  }

  private fail(issues: readonly KeystoreIssue[], now: Date): ReloadOutcome {
    this.stale = this.generation !== null;
    this.lastError = { at: now.toISOString(), issues: issues.map(formatIssue) };
    this.options.logger.error(
      { issues: this.lastError.issues, serving_generation: this.generationId, stale: this.stale },
      this.generation
        ? "keystore invalid; still serving the last good generation"
        : "keystore invalid; no generation to serve",
    );
    return { result: "failed", issues };
  }
}
