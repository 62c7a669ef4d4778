/**
 * Worker-thread entry for keystore syncs. Parsing and validating a 100 000-client
 * keystore.yaml takes long enough to stall every Check if done on the main thread; here
 * it runs beside it, with its own SQLite connection (WAL lets the main thread keep
 * reading). The worker stays up while edits keep coming and is retired when idle, which
 * returns its heap to the system.
 */
import { parentPort } from "node:worker_threads";
import { type KeystoreChanges, KeystoreStore } from "./store.js";
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
  | {
      readonly kind: "result";
      readonly id: number;
      readonly ok: true;
      readonly outcome: SyncOutcome;
    }
  | { readonly kind: "result"; readonly id: number; readonly ok: false; readonly error: string }
  /** Sent after a result: what the new generation changed, for the log (ids and digest prefixes). */
  | { readonly kind: "changes"; readonly generation: number; readonly changes: KeystoreChanges };

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
    return { kind: "result", id: input.id, ok: true, outcome };
  } catch (error) {
    // The connection may be in a bad state; open a fresh one next time.
    stores.get(input.dbPath)?.close();
    stores.delete(input.dbPath);
    return { kind: "result", id: input.id, ok: false, error: (error as Error).message };
  }
}

/**
 * Compares the new generation with the one before. It runs after the result is sent
 * (about 0.5 s at 100 000 clients), so the log line never delays a revocation.
 */
function reportChanges(input: WorkerInput, output: WorkerOutput): void {
  if (output.kind !== "result" || !output.ok || output.outcome.result !== "applied") return;
  const { previousGenerationId, generation } = output.outcome;
  if (previousGenerationId === null || previousGenerationId === generation.id) return;
  try {
    const changes = storeFor(input.dbPath).diff(previousGenerationId, generation.id);
    parentPort?.postMessage({
      kind: "changes",
      generation: generation.id,
      changes,
    } satisfies WorkerOutput);
  } catch {
    // The change report is a courtesy; the generation is applied either way.
  }
}

parentPort?.on("message", (input: WorkerInput) => {
  const output = run(input);
  parentPort?.postMessage(output);
  reportChanges(input, output);
});
