/**
 * Runs one keystore sync in a short-lived worker thread and returns its outcome.
 */
import { Worker } from "node:worker_threads";
import type { WorkerInput, WorkerOutput } from "./reload-worker.js";
import type { SyncOutcome } from "./sync-keystore.js";

/** A sync that has not answered in this time is abandoned (and reported as an error). */
const WORKER_TIMEOUT_MS = 60_000;

// From source (tests run TypeScript through tsx) the worker must register tsx itself:
// loader hooks of the main thread do not reach worker threads on Node 20.
const FROM_SOURCE = import.meta.url.endsWith(".ts");
const ENTRY = new URL(FROM_SOURCE ? "./reload-worker.ts" : "./reload-worker.js", import.meta.url);

function spawn(input: WorkerInput): Worker {
  if (!FROM_SOURCE) return new Worker(ENTRY, { workerData: input });
  const bootstrap = `import("tsx/esm/api").then(({ register }) => { register(); return import(${JSON.stringify(ENTRY.href)}); });`;
  return new Worker(bootstrap, { eval: true, workerData: input });
}

/**
 * Syncs keystore.yaml into SQLite off the main thread.
 * @throws Error when the worker fails (SQLite error, crash, timeout).
 */
export function syncInWorker(input: WorkerInput): Promise<SyncOutcome> {
  return new Promise((resolve, reject) => {
    const worker = spawn(input);
    let settled = false;
    const settle = (fn: () => void) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      fn();
    };
    const timer = setTimeout(() => {
      settle(() =>
        reject(new Error(`keystore sync did not finish within ${WORKER_TIMEOUT_MS} ms`)),
      );
      void worker.terminate();
    }, WORKER_TIMEOUT_MS);
    worker.once("message", (output: WorkerOutput) =>
      settle(() =>
        output.ok
          ? resolve(output.outcome)
          : reject(new Error(`keystore sync failed: ${output.error}`)),
      ),
    );
    worker.once("error", (error) => settle(() => reject(error)));
    worker.once("exit", (code) =>
      settle(() => reject(new Error(`keystore sync worker exited (${code}) without an answer`))),
    );
  });
}
