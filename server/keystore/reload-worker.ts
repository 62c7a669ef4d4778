/**
 * Worker-thread entry for keystore syncs. Parsing and validating a 100 000-client
 * keystore.yaml takes long enough to stall every Check if done on the main thread; here
 * it runs beside it, with its own SQLite connection (WAL lets the main thread keep
 * reading). The worker stays up while edits keep coming and is retired when idle, which
 * returns its heap to the system.
 */
import { parentPort } from "node:worker_threads";
import { KeystoreStore } from "./store.js";
import { type SyncOutcome, type SyncRequest, syncKeystoreFile } from "./sync-keystore.js";

/** What the main thread sends: a SyncRequest with master keys as plain pairs. */
export interface WorkerInput extends Omit<SyncRequest, "masterKeys"> {
  readonly id: number;
  readonly dbPath: string;
  readonly masterKeys: ReadonlyArray<readonly [string, Uint8Array]>;
  /** ISO time the reload started. */
  readonly now: string;
}

export type WorkerOutput =
  | { readonly id: number; readonly ok: true; readonly outcome: SyncOutcome }
  | { readonly id: number; readonly ok: false; readonly error: string };

const stores = new Map<string, KeystoreStore>();

function storeFor(dbPath: string): KeystoreStore {
  let store = stores.get(dbPath);
  if (!store) {
    store = KeystoreStore.open(dbPath);
    stores.set(dbPath, store);
  }
  return store;
}

function run(input: WorkerInput): WorkerOutput {
  try {
    const masterKeys = new Map(input.masterKeys.map(([kid, key]) => [kid, Buffer.from(key)]));
    const outcome = syncKeystoreFile(
      storeFor(input.dbPath),
      { ...input, masterKeys },
      new Date(input.now),
    );
    return { id: input.id, ok: true, outcome };
  } catch (error) {
    // The connection may be in a bad state; open a fresh one next time.
    stores.get(input.dbPath)?.close();
    stores.delete(input.dbPath);
    return { id: input.id, ok: false, error: (error as Error).message };
  }
}

parentPort?.on("message", (input: WorkerInput) => parentPort?.postMessage(run(input)));
