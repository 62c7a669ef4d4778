/**
 * The keystore's lifecycle on the main thread: runs syncs (in a worker), switches the
 * Check path to each new generation, and keeps serving the last good generation when
 * an edit is invalid or the file disappears. The Check path reads only `generationId`,
 * `lookup` and `upstreamKeys`.
 */
import type { MasterKeys } from "../../crypto/aes-gcm.js";
import type { Logger } from "../../logger.js";
import {
  formatIssue,
  type Generation,
  type KeystoreIssue,
  type TokenMatch,
} from "../format/model.js";
import type { KeystoreStore } from "../store/store.js";
import { UpstreamKeyResolver } from "../store/upstream-keys.js";
import type { SyncReport } from "./reload-worker.js";
import { ReloadWorker, type SyncReply } from "./run-reload-worker.js";
import type { SyncOutcome } from "./sync-keystore.js";

export interface KeystoreManagerOptions {
  readonly path: string;
  readonly dbPath: string;
  readonly masterKeys: MasterKeys;
  readonly env: Readonly<Record<string, string | undefined>>;
  /** Enforce mode: an empty client list is an error. */
  readonly requireClients: boolean;
  /** KEYGATE_UPSTREAM_ENV_PREFIX (config.upstreamEnvPrefix); absent: any name but KEYGATE_*. */
  readonly upstreamEnvPrefix?: string | null;
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

export class KeystoreManager {
  /** Current generation id for the hot path; null until one is loaded. */
  generationId: number | null;
  readonly upstreamKeys: UpstreamKeyResolver;
  private generation: Generation | null;
  private stale = false;
  private lastError: KeystoreStatus["lastError"] = null;
  private lastReloadAt: string | null = null;
  private warnings: readonly string[] = [];
  /** Hash of the file bytes last decided (valid or not); null after a read failure. */
  private lastSeenSha256: string | null = null;
  private readonly worker = new ReloadWorker();
  private inFlight: Promise<ReloadOutcome> | undefined;
  private queued: Promise<ReloadOutcome> | undefined;

  constructor(
    private readonly store: KeystoreStore,
    private readonly options: KeystoreManagerOptions,
  ) {
    this.generation = store.current() ?? null;
    this.generationId = this.generation?.id ?? null;
    this.upstreamKeys = new UpstreamKeyResolver(
      options.masterKeys,
      options.env,
      options.upstreamEnvPrefix ?? null,
    );
  }

  /** Looks a digest up in the current generation. */
  lookup(digest: string): TokenMatch | undefined {
    return this.store.lookup(digest);
  }

  /**
   * Reads keystore.yaml and, when it changed and is valid, applies it as a new
   * generation. Reloads never overlap: a request during one runs once more after it,
   * so the last edit always wins.
   */
  reload(): Promise<ReloadOutcome> {
    if (this.inFlight) {
      this.queued ??= this.inFlight.then(() => {
        this.queued = undefined;
        return this.reload();
      });
      return this.queued;
    }
    this.inFlight = this.runOnce().finally(() => {
      this.inFlight = undefined;
    });
    return this.inFlight;
  }

  /** Waits for a reload in progress, then stops the sync worker. */
  async close(): Promise<void> {
    await this.inFlight?.catch(() => undefined);
    await this.worker.close();
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

  private async runOnce(): Promise<ReloadOutcome> {
    const now = new Date();
    this.lastReloadAt = now.toISOString();
    let reply: SyncReply;
    try {
      reply = await this.worker.sync({
        path: this.options.path,
        dbPath: this.options.dbPath,
        masterKeys: [...this.options.masterKeys].map(
          ([kid, key]) => [kid, new Uint8Array(key)] as const,
        ),
        env: this.options.env,
        requireClients: this.options.requireClients,
        upstreamEnvPrefix: this.options.upstreamEnvPrefix ?? null,
        lastSeenSha256: this.lastSeenSha256,
        now: now.toISOString(),
      });
    } catch (error) {
      // A sync that broke (SQLite, worker crash) may be retried on the same bytes.
      this.lastSeenSha256 = null;
      return this.fail(
        [{ file: this.options.path, line: 1, column: 1, message: (error as Error).message }],
        now,
      );
    }
    const { outcome } = reply;
    switch (outcome.result) {
      case "unchanged":
        return { result: "unchanged" };
      case "failed":
        this.lastSeenSha256 = outcome.sourceSha256;
        return this.fail(outcome.issues, now);
      case "applied": {
        this.lastSeenSha256 = outcome.sourceSha256;
        // Checks switch to the new generation now; its report follows (the reload
        // resolves once it is in, so /keystore then shows the warnings).
        const applied = this.succeed(outcome);
        await this.takeReport(reply.report);
        return applied;
      }
    }
  }

  private async takeReport(pending: Promise<SyncReport>): Promise<void> {
    const { logger } = this.options;
    let report: SyncReport;
    try {
      report = await pending;
    } catch (error) {
      report = { warnings: { error: (error as Error).message }, changes: null };
    }
    if (report.changes !== null) logger.info(report.changes, "keystore changes");
    if ("error" in report.warnings) {
      this.warnings = [];
      logger.warn(
        { file: this.options.path, err: report.warnings.error },
        "could not check the keystore's upstream keys; clients with a bad key will answer 503 KEY_UNAVAILABLE",
      );
      return;
    }
    this.warnings = report.warnings;
    for (const warning of this.warnings) logger.warn({ file: this.options.path }, warning);
  }

  private succeed(outcome: Extract<SyncOutcome, { result: "applied" }>): ReloadOutcome {
    const generation = this.store.refresh() ?? outcome.generation;
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
