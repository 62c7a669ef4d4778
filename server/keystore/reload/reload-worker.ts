/**
 * Worker-thread entry for keystore syncs. Parsing and validating a 100 000-client
 * keystore.yaml takes long enough to stall every Check if done on the main thread; here
 * it runs beside it, with its own SQLite connection (WAL lets the main thread keep
 * reading). The worker stays up while edits keep coming and is retired when idle, which
 * returns its heap to the system.
 */
import { parentPort } from "node:worker_threads";
import type { SealedKeyChecks } from "../format/upstream-key-warnings.js";
import { type KeystoreChanges, KeystoreStore } from "../store/store.js";
import {
  type SyncOutcome,
  type SyncRequest,
  type SyncRun,
  syncKeystoreFile,
} from "./sync-keystore.js";

/** What the main thread sends: a SyncRequest with master keys as plain pairs. */
export interface WorkerInput extends Omit<SyncRequest, "masterKeys"> {
  readonly id: number;
  readonly dbPath: string;
  readonly masterKeys: ReadonlyArray<readonly [string, Uint8Array]>;
  /** ISO time the reload started. */
  readonly now: string;
}

/**
 * Exactly two messages per request. The outcome goes as soon as the generation is
 * decided, so a revocation never waits for what follows; the report (the upstream-key
 * warnings, a decrypt per `enc:` value, and the change log) ends the request.
 */
export type WorkerOutput =
  | { readonly kind: "outcome"; readonly id: number; readonly outcome: SyncOutcome }
  | { readonly kind: "outcome"; readonly id: number; readonly error: string }
  | { readonly kind: "report"; readonly id: number; readonly report: SyncReport };

/** What an applied generation leaves for after its outcome (empty for other outcomes). */
export interface SyncReport {
  /** Formatted upstream-key warnings, or the reason they could not be computed. */
  readonly warnings: readonly string[] | { readonly error: string };
  /** What the generation changed, for the log (ids and digest prefixes); null when nothing to say. */
  readonly changes: { readonly generation: number; readonly changes: KeystoreChanges } | null;
}

const NOTHING_TO_REPORT: SyncReport = { warnings: [], changes: null };

const stores = new Map<string, KeystoreStore>();
/** The worker loads while edits keep coming: each load reuses the last one's `enc:` checks. */
const sealedKeyChecks: SealedKeyChecks = {};

function storeFor(dbPath: string): KeystoreStore {
  let store = stores.get(dbPath);
  if (!store) {
    store = KeystoreStore.open(dbPath);
    stores.set(dbPath, store);
  }
  return store;
}

function dropStore(dbPath: string): void {
  // The connection may be in a bad state; open a fresh one next time.
  stores.get(dbPath)?.close();
  stores.delete(dbPath);
}

function post(output: WorkerOutput): void {
  parentPort?.postMessage(output);
}

function sync(input: WorkerInput): SyncRun | { readonly error: string } {
  try {
    const masterKeys = new Map(input.masterKeys.map(([kid, key]) => [kid, Buffer.from(key)]));
    return syncKeystoreFile(
      storeFor(input.dbPath),
      { ...input, masterKeys },
      new Date(input.now),
      sealedKeyChecks,
    );
  } catch (error) {
    dropStore(input.dbPath);
    return { error: (error as Error).message };
  }
}

function reportOf(run: SyncRun): SyncReport {
  const { outcome, changes } = run;
  if (outcome.result !== "applied") return NOTHING_TO_REPORT;
  let warnings: SyncReport["warnings"];
  try {
    warnings = run.warnings();
  } catch (error) {
    warnings = { error: (error as Error).message };
  }
  return {
    warnings,
    changes: changes === null ? null : { generation: outcome.generation.id, changes },
  };
}

parentPort?.on("message", (input: WorkerInput) => {
  const run = sync(input);
  if ("error" in run) {
    post({ kind: "outcome", id: input.id, error: run.error });
    post({ kind: "report", id: input.id, report: NOTHING_TO_REPORT });
    return;
  }
  post({ kind: "outcome", id: input.id, outcome: run.outcome });
  post({ kind: "report", id: input.id, report: reportOf(run) });
});
