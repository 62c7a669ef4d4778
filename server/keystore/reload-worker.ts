/**
 * Worker-thread entry for one keystore sync. Parsing and validating a 100 000-client
 * keystore.yaml takes long enough to stall every Check if done on the main thread, and
 * its garbage would stay in the server's heap; a short-lived worker with its own SQLite
 * connection (WAL lets the main thread keep reading) keeps both off the hot path.
 */
import { parentPort, workerData } from "node:worker_threads";
import { KeystoreStore } from "./store.js";
import { type SyncOutcome, type SyncRequest, syncKeystoreFile } from "./sync-keystore.js";

/** What the main thread sends: a SyncRequest with master keys as transferable pairs. */
export interface WorkerInput extends Omit<SyncRequest, "masterKeys"> {
  readonly dbPath: string;
  readonly masterKeys: ReadonlyArray<readonly [string, Uint8Array]>;
  /** ISO time the reload started. */
  readonly now: string;
}

export type WorkerOutput =
  | { readonly ok: true; readonly outcome: SyncOutcome }
  | { readonly ok: false; readonly error: string };

function run(input: WorkerInput): WorkerOutput {
  const store = KeystoreStore.open(input.dbPath);
  try {
    const masterKeys = new Map(input.masterKeys.map(([kid, key]) => [kid, Buffer.from(key)]));
    return {
      ok: true,
      outcome: syncKeystoreFile(store, { ...input, masterKeys }, new Date(input.now)),
    };
  } catch (error) {
    return { ok: false, error: (error as Error).message };
  } finally {
    store.close();
  }
}

parentPort?.postMessage(run(workerData as WorkerInput));
