/**
 * Worker-thread entry for keystore syncs. Parsing and validating a 100 000-client
 * keystore.yaml takes long enough to stall every Check if done on the main thread; here
 * it runs beside it, with its own SQLite connection (WAL lets the main thread keep
 * reading). The worker stays up while edits keep coming and is retired when idle, which
 * returns its heap to the system.
 */
import { parentPort } from "node:worker_threads";
import { type KeystoreChanges, KeystoreStore } from "./store.js";
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

export type WorkerOutput =
  | {
      readonly kind: "result";
      readonly id: number;
      readonly ok: true;
      readonly outcome: SyncOutcome;
    }
  | { readonly kind: "result"; readonly id: number; readonly ok: false; readonly error: string }
  /** Sent after an applied result: its upstream-key warnings, formatted (maybe none). */
  | {
      readonly kind: "warnings";
      readonly id: number;
      readonly ok: true;
      readonly warnings: readonly string[];
    }
  | { readonly kind: "warnings"; readonly id: number; readonly ok: false; readonly error: string }
  /** Sent after a result: what the new generation changed, for the log (ids and digest prefixes). */
  | { readonly kind: "changes"; readonly generation: number; readonly changes: KeystoreChanges }
  /** The last message for a request: the worker is idle again. */
  | { readonly kind: "done"; readonly id: number };

const stores = new Map<string, KeystoreStore>();

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

function sync(input: WorkerInput): { output: WorkerOutput; run?: SyncRun } {
  try {
    const masterKeys = new Map(input.masterKeys.map(([kid, key]) => [kid, Buffer.from(key)]));
    const run = syncKeystoreFile(
      storeFor(input.dbPath),
      { ...input, masterKeys },
      new Date(input.now),
    );
    return { output: { kind: "result", id: input.id, ok: true, outcome: run.outcome }, run };
  } catch (error) {
    dropStore(input.dbPath);
    return { output: { kind: "result", id: input.id, ok: false, error: (error as Error).message } };
  }
}

/**
 * What an applied generation leaves for after its result: the upstream-key warnings
 * (a decrypt per enc: value, about 0.5 s at 100 000 clients on a fresh worker) and the
 * change report. Neither may delay a revocation.
 */
function followUp(input: WorkerInput, run: SyncRun): void {
  const { outcome, changes } = run;
  if (outcome.result !== "applied") return;
  try {
    post({ kind: "warnings", id: input.id, ok: true, warnings: run.warnings() });
  } catch (error) {
    post({ kind: "warnings", id: input.id, ok: false, error: (error as Error).message });
  }
  if (changes !== null) post({ kind: "changes", generation: outcome.generation.id, changes });
}

parentPort?.on("message", (input: WorkerInput) => {
  const { output, run } = sync(input);
  post(output);
  if (run !== undefined) followUp(input, run);
  post({ kind: "done", id: input.id });
});
