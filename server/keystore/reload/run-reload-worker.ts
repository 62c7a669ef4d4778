/**
 * Runs keystore syncs in a worker thread, one at a time. The worker is started on
 * demand, reused while edits keep coming (no start-up cost per save), and retired after
 * an idle period so the heap a large keystore needed is given back.
 */
import { Worker } from "node:worker_threads";
import type { SyncReport, WorkerInput, WorkerOutput } from "./reload-worker.js";
import type { SyncOutcome } from "./sync-keystore.js";

/** A sync that has not answered in this time is abandoned (and reported as an error). */
const SYNC_TIMEOUT_MS = 60_000;
/** An idle worker is retired after this long. */
const IDLE_MS = 10_000;

// From source (tests run TypeScript through tsx) the worker must register tsx itself:
// loader hooks of the main thread do not reach worker threads on Node 20.
const FROM_SOURCE = import.meta.url.endsWith(".ts");
const ENTRY = new URL(FROM_SOURCE ? "./reload-worker.ts" : "./reload-worker.js", import.meta.url);

function spawn(): Worker {
  if (!FROM_SOURCE) return new Worker(ENTRY);
  const bootstrap = `import("tsx/esm/api").then(({ register }) => { register(); return import(${JSON.stringify(ENTRY.href)}); });`;
  return new Worker(bootstrap, { eval: true });
}

/** A sync's answer: the outcome as soon as the generation is decided, its report later. */
export interface SyncReply {
  readonly outcome: SyncOutcome;
  /** Upstream-key warnings and the change log; rejects only when the worker broke. */
  readonly report: Promise<SyncReport>;
}

interface Deferred<T> {
  readonly promise: Promise<T>;
  resolve(value: T): void;
  reject(error: Error): void;
}

function deferred<T>(): Deferred<T> {
  let resolve!: (value: T) => void;
  let reject!: (error: Error) => void;
  const promise = new Promise<T>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  // Nobody may be waiting for a report when the worker breaks: not an unhandled rejection.
  promise.catch(() => undefined);
  return { promise, resolve, reject };
}

/** One sync in the worker, from its request until its report. */
interface Pending {
  readonly reply: Deferred<SyncReply>;
  readonly report: Deferred<SyncReport>;
  readonly timer: NodeJS.Timeout;
}

export class ReloadWorker {
  private worker: Worker | undefined;
  private idleTimer: NodeJS.Timeout | undefined;
  private nextId = 1;
  private readonly pending = new Map<number, Pending>();

  /**
   * Syncs keystore.yaml into SQLite off the main thread.
   * @throws Error when the sync fails (SQLite error, worker crash, timeout).
   */
  sync(input: Omit<WorkerInput, "id">): Promise<SyncReply> {
    if (this.idleTimer) clearTimeout(this.idleTimer);
    const worker = this.ensureWorker();
    const id = this.nextId++;
    const timer = setTimeout(
      () => this.fail(new Error(`keystore sync did not finish within ${SYNC_TIMEOUT_MS} ms`)),
      SYNC_TIMEOUT_MS,
    );
    const pending: Pending = { reply: deferred(), report: deferred(), timer };
    this.pending.set(id, pending);
    worker.postMessage({ ...input, id } satisfies WorkerInput);
    return pending.reply.promise;
  }

  /** Stops the worker; pending syncs fail. */
  close(): Promise<void> {
    if (this.idleTimer) clearTimeout(this.idleTimer);
    const worker = this.worker;
    this.fail(new Error("keystore sync worker closed"));
    return worker ? worker.terminate().then(() => undefined) : Promise.resolve();
  }

  private ensureWorker(): Worker {
    if (this.worker) return this.worker;
    const worker = spawn();
    worker.unref();
    worker.on("message", (output: WorkerOutput) => this.settle(output));
    worker.on("error", (error) => this.fail(error));
    worker.on("exit", (code) => {
      if (this.worker === worker) this.fail(new Error(`keystore sync worker exited (${code})`));
    });
    this.worker = worker;
    return worker;
  }

  private settle(output: WorkerOutput): void {
    const pending = this.pending.get(output.id);
    if (!pending) return;
    if (output.kind === "outcome") {
      if ("error" in output)
        pending.reply.reject(new Error(`keystore sync failed: ${output.error}`));
      else pending.reply.resolve({ outcome: output.outcome, report: pending.report.promise });
      return;
    }
    this.pending.delete(output.id);
    clearTimeout(pending.timer);
    pending.report.resolve(output.report);
    if (this.pending.size === 0) {
      this.idleTimer = setTimeout(() => void this.close(), IDLE_MS);
      this.idleTimer.unref();
    }
  }

  /** Fails every pending sync and drops the worker, so the next sync starts a fresh one. */
  private fail(error: Error): void {
    const worker = this.worker;
    this.worker = undefined;
    for (const [id, pending] of this.pending) {
      clearTimeout(pending.timer);
      pending.reply.reject(error);
      pending.report.reject(error);
      this.pending.delete(id);
    }
    if (worker) void worker.terminate();
  }
}
