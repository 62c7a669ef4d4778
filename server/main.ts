/**
 * Composition: wires configuration, keystore, gRPC and admin servers together. No
 * policy lives here. `startKeygate` is what `keygate serve` runs and what the
 * integration tests start in-process.
 */
import { existsSync } from "node:fs";
import { startAdminServer } from "./admin/admin-server.js";
import { createMetrics, type Metrics } from "./admin/metrics.js";
import type { Config } from "./config.js";
import { createProcessService } from "./extproc/process-service.js";
import { createCheckService } from "./grpc/check-service.js";
import { startGrpcServer } from "./grpc/grpc-server.js";
import { createThrottleGuard } from "./grpc/throttle-guard.js";
import {
  logGrpcTransport,
  openTlsCredentials,
  type TlsCredentials,
  TlsFilesError,
} from "./grpc/tls-credentials.js";
import { formatIssue } from "./keystore/format/model.js";
import { KeystoreManager, type ReloadOutcome } from "./keystore/reload/keystore-manager.js";
import { watchKeystore } from "./keystore/reload/keystore-watcher.js";
import { KeystoreStore } from "./keystore/store/store.js";
import type { Logger } from "./logger.js";
import { startBudgets } from "./usage/budgets.js";
import { LastUseRecorder } from "./usage/last-use-recorder.js";
import type { UsageSink } from "./usage/token-usage.js";
import { fanOut, startUsageRecording } from "./usage/usage-recording.js";

export interface RunningKeygate {
  readonly grpcPort: number;
  readonly adminPort: number;
  readonly keystore: KeystoreManager;
  readonly metrics: Metrics;
  /** Where the response path records each response's token usage: the ledger and the budget counters. */
  readonly usageSink: UsageSink;
  /** Re-reads keystore.yaml (SIGHUP; the file watcher calls it too). */
  reload(): Promise<ReloadOutcome>;
  /** Drains in-flight checks, then closes everything. */
  stop(): Promise<void>;
}

/** Editors fire several events per save; wait this long after the last one. */
const WATCH_DEBOUNCE_MS = 50;
/** Backs up filesystem events that never come (network file systems, late directories). */
const WATCH_POLL_MS = 1000;

/** How often per-client last use and token usage are written to SQLite. */
const USAGE_FLUSH_MS = 5000;

/** Start-up refused: the message is what the operator must fix. */
export class StartupError extends Error {}

/**
 * Starts keygate.
 * @throws StartupError when keystore.yaml exists but is invalid and there is no last good generation.
 */
// biome-ignore lint/complexity/noExcessiveLinesPerFunction: composition, wiring only (issue 10).
export async function startKeygate(
  config: Config,
  env: NodeJS.ProcessEnv,
  logger: Logger,
): Promise<RunningKeygate> {
  const metrics = createMetrics();
  // TLS files first: a bad certificate stops start-up before anything is opened.
  const tls = openGrpcTls(config, logger);
  const store = KeystoreStore.open(config.dbPath);
  store.neverWaitForWriters();
  const keystore = new KeystoreManager(store, {
    path: config.keystorePath,
    dbPath: config.dbPath,
    masterKeys: config.masterKeys,
    env,
    requireClients: config.mode === "enforce",
    upstreamEnvPrefix: config.upstreamEnvPrefix,
    logger,
  });

  const first = await keystore.reload();
  if (
    first.result === "failed" &&
    keystore.generationId === null &&
    existsSync(config.keystorePath)
  ) {
    store.close();
    tls?.close();
    throw new StartupError(
      `keystore is invalid and there is no last good generation to serve:\n${first.issues.map(formatIssue).join("\n")}`,
    );
  }

  const usage = new LastUseRecorder(store, logger, USAGE_FLUSH_MS);
  const usageRecording = startUsageRecording({
    dbPath: config.dbPath,
    registry: metrics.registry,
    logger,
    flushIntervalMs: USAGE_FLUSH_MS,
  });
  const budgets = await startBudgets({
    redisUrl: config.usageRedisUrl,
    logger,
    registry: metrics.registry,
    ledger: usageRecording.table,
  });
  const usageSink = fanOut(usageRecording.sink, budgets.counters);
  // Token usage read on the response path (ext_proc) goes to the ledger and the budget counters.
  const tokenUsage: UsageSink = usageSink;
  const grpc = await startGrpcServer({
    address: config.grpcAddress,
    maxReceiveBytes: config.grpcMaxReceiveBytes,
    ...(tls === null ? {} : { tls }),
    ready: () => keystore.generationId !== null,
    check: createCheckService({
      mode: config.mode,
      responseOptions: {
        upstreamHeader: config.upstreamHeader,
        clientIdHeader: config.clientIdHeader,
        metadataUpstreamKey: config.metadataUpstreamKey,
      },
      keystore,
      logger,
      metrics,
      usage,
      budgets: budgets.counters,
      throttle: createThrottleGuard(config.throttle, { logger, metrics }),
    }),
    process: createProcessService({
      usage: tokenUsage,
      logger,
      onProviderError: (type) => metrics.providerErrors.inc({ type }),
      onUsageMissing: (reason) => metrics.usageMissing.inc({ reason }),
    }),
  });
  logGrpcTransport(logger, config.grpcAddress, tls);
  const admin = await startAdminServer({
    host: config.adminAddress.host,
    port: config.adminAddress.port,
    metrics,
    keystoreStatus: () => keystore.status(),
    budgetStatus: () => budgets.status(),
  });

  function observe(outcome: ReloadOutcome): ReloadOutcome {
    const status = keystore.status();
    metrics.reloads.inc({ result: outcome.result });
    metrics.lastReload.set(Date.now() / 1000);
    metrics.keystoreGeneration.set(status.generation?.id ?? 0);
    metrics.keystoreClients.set(status.generation?.clientCount ?? 0);
    metrics.keystoreStale.set(status.stale ? 1 : 0);
    metrics.keystoreReady.set(status.generation ? 1 : 0);
    // Health follows `ready` live; this tells Watches the state may have changed.
    grpc.setServing(true);
    return outcome;
  }
  observe(first);
  const reload = () => keystore.reload().then(observe);
  const watcher = watchKeystore({
    path: config.keystorePath,
    debounceMs: WATCH_DEBOUNCE_MS,
    pollMs: WATCH_POLL_MS,
    logger,
    onChange: () => {
      reload().catch((error: unknown) => logger.error({ err: error }, "keystore reload failed"));
    },
  });

  let stopping: Promise<void> | undefined;
  return {
    grpcPort: grpc.port,
    adminPort: admin.port,
    keystore,
    metrics,
    usageSink,
    reload,
    stop() {
      stopping ??= (async () => {
        watcher.close();
        tls?.close();
        await keystore.close();
        await grpc.drain(config.drainTimeoutMs);
        await admin.close();
        usage.close();
        await budgets.close();
        usageRecording.close();
        store.close();
      })();
      return stopping;
    },
  };
}

/**
 * The gRPC listener's TLS credentials, watched for changes, or null for plaintext.
 * @throws StartupError when the certificate files are missing or unusable.
 */
function openGrpcTls(config: Config, logger: Logger): TlsCredentials | null {
  if (config.grpcTls === null) return null;
  try {
    return openTlsCredentials({
      files: config.grpcTls,
      logger,
      debounceMs: WATCH_DEBOUNCE_MS,
      pollMs: WATCH_POLL_MS,
    });
  } catch (error) {
    if (error instanceof TlsFilesError) throw new StartupError(error.message);
    throw error;
  }
}
