/**
 * The Check handler over a real keystore: keystore.yaml in a temp dir, its SQLite store,
 * the manager's first sync, and createCheckService with the default header names in
 * enforce mode. Tests that reload write `keystorePath` and call `keystore.reload()`.
 */
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { createMetrics } from "../../server/admin/metrics.js";
import type { Decision } from "../../server/auth/decide.js";
import { createCheckService } from "../../server/grpc/check-service.js";
import type { UnaryHandler } from "../../server/grpc/grpc-server.js";
import { KeystoreManager } from "../../server/keystore/reload/keystore-manager.js";
import { KeystoreStore } from "../../server/keystore/store/store.js";
import { createLogger } from "../../server/logger.js";

export interface CheckServiceOnKeystore {
  readonly service: UnaryHandler;
  readonly keystore: KeystoreManager;
  readonly keystorePath: string;
  close(): Promise<void>;
}

/**
 * @param env what `env:` upstream keys read.
 * @throws Error when the first sync does not apply.
 */
export async function checkServiceOn(
  keystoreText: string,
  env: Readonly<Record<string, string>>,
): Promise<CheckServiceOnKeystore> {
  const dir = mkdtempSync(path.join(tmpdir(), "keygate-check-"));
  const keystorePath = path.join(dir, "keystore.yaml");
  writeFileSync(keystorePath, keystoreText);
  const logger = createLogger("silent");
  const store = KeystoreStore.open(path.join(dir, "keystore.db"));
  const keystore = new KeystoreManager(store, {
    path: keystorePath,
    dbPath: path.join(dir, "keystore.db"),
    masterKeys: new Map(),
    env,
    requireClients: true,
    logger,
  });
  const first = await keystore.reload();
  if (first.result !== "applied") throw new Error(`keystore not applied: ${first.result}`);
  const service = createCheckService({
    mode: "enforce",
    responseOptions: {
      upstreamHeader: "x-api-key",
      clientIdHeader: "x-client-id",
      metadataUpstreamKey: false,
    },
    keystore,
    logger,
    metrics: createMetrics(),
  });
  return {
    service,
    keystore,
    keystorePath,
    async close() {
      await keystore.close();
      store.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** An allow for client c1 with upstream key sk-up, known, nothing forwarded; `partial` overrides. */
export function allowDecision(
  partial: Partial<Extract<Decision, { outcome: "allow" }>> = {},
): Extract<Decision, { outcome: "allow" }> {
  return {
    outcome: "allow",
    authMode: "known",
    clientId: "c1",
    upstreamKey: "sk-up",
    forward: [],
    wouldDeny: null,
    ...partial,
  };
}
