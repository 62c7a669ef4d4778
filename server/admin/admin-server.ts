/**
 * Admin HTTP: /healthz (process alive), /readyz (a generation is loaded), /metrics
 * (Prometheus) and /keystore (generation, source hash, stale flag, last error, budgets;
 * no secrets). Budget counters that cannot reach Redis show as degraded in /readyz's
 * details without making keygate unready: each replica then enforces its own counts.
 */
import { createServer, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import type { KeystoreStatus } from "../keystore/reload/keystore-manager.js";
import type { BudgetStatus } from "../usage/budgets.js";
import type { Metrics } from "./metrics.js";

export interface AdminServerOptions {
  readonly host: string;
  readonly port: number;
  readonly metrics: Metrics;
  readonly keystoreStatus: () => KeystoreStatus;
  /** Budget counters' state (usage/budgets.ts); absent: no `budgets` section. */
  readonly budgetStatus?: () => BudgetStatus;
}

export interface RunningAdminServer {
  readonly port: number;
  close(): Promise<void>;
}

function sendJson(res: ServerResponse, status: number, body: unknown): void {
  res.writeHead(status, { "content-type": "application/json" }).end(`${JSON.stringify(body)}\n`);
}

/** /readyz's budget details: the store, and why it is degraded when it is. */
function budgetReadiness(status: BudgetStatus | undefined): Record<string, unknown> {
  if (status === undefined) return {};
  return {
    budgets: {
      store: status.store,
      degraded: status.degraded,
      ...(status.degraded ? { reason: status.redis?.reason ?? "Redis has not answered yet" } : {}),
    },
  };
}

/**
 * Starts the admin server.
 * @throws Error when the address cannot be bound.
 */
export async function startAdminServer(options: AdminServerOptions): Promise<RunningAdminServer> {
  const server: Server = createServer((req, res) => {
    const path = (req.url ?? "/").split("?")[0];
    if (req.method !== "GET" && req.method !== "HEAD")
      return sendJson(res, 405, { error: "method not allowed" });
    switch (path) {
      case "/healthz":
        return sendJson(res, 200, { status: "ok" });
      case "/readyz": {
        const status = options.keystoreStatus();
        const ready = status.generation !== null;
        return sendJson(res, ready ? 200 : 503, {
          ready,
          generation: status.generation?.id ?? null,
          stale: status.stale,
          ...budgetReadiness(options.budgetStatus?.()),
        });
      }
      case "/keystore":
        return sendJson(res, 200, {
          ...options.keystoreStatus(),
          ...(options.budgetStatus === undefined ? {} : { budgets: options.budgetStatus() }),
        });
      case "/metrics":
        options.metrics.registry.metrics().then(
          (text) =>
            res.writeHead(200, { "content-type": options.metrics.registry.contentType }).end(text),
          () => sendJson(res, 500, { error: "metrics unavailable" }),
        );
        return;
      default:
        return sendJson(res, 404, {
          error: "not found",
          endpoints: ["/healthz", "/readyz", "/metrics", "/keystore"],
        });
    }
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(options.port, options.host, () => resolve());
  });
  return {
    port: (server.address() as AddressInfo).port,
    close: () => new Promise((resolve) => server.close(() => resolve())),
  };
}
