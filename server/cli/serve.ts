/**
 * `keygate serve`: configuration from the environment, a starter keystore on a fresh
 * checkout, then the server until SIGTERM/SIGINT (drain, exit 0). SIGHUP reloads.
 */
import { existsSync } from "node:fs";
import { ConfigError, loadConfig } from "../config.js";
import { writeStarterKeystore } from "../keystore/format/starter.js";
import { createLogger } from "../logger.js";
import { StartupError, startKeygate } from "../main.js";
import { SERVER_NODE_FLAGS } from "../node-flags.js";

function starterBanner(path: string, token: string): string {
  return [
    "",
    `keygate: no keystore found, so a starter one was written to ${path} with one client, "demo".`,
    "keygate: its token is shown once, now; keystore.yaml holds only its SHA-256:",
    "",
    `    ${token}`,
    "",
    "keygate: try it through Envoy with  curl -H 'Authorization: Bearer <token>' ...  (see README).",
    "",
  ].join("\n");
}

/** Runs the server; resolves with the process exit code once it has stopped. */
export async function serve(env: NodeJS.ProcessEnv): Promise<number> {
  let config: ReturnType<typeof loadConfig>;
  try {
    config = loadConfig(env);
  } catch (error) {
    if (error instanceof ConfigError) {
      process.stderr.write(`keygate: configuration error: ${error.message}\n`);
      return 1;
    }
    throw error;
  }
  const logger = createLogger(config.logLevel);

  // Only the default path is ever created: an explicit KEYGATE_KEYSTORE that is missing fails closed.
  if (!config.keystoreExplicit && !existsSync(config.keystorePath)) {
    const { token } = writeStarterKeystore(config.keystorePath);
    process.stderr.write(starterBanner(config.keystorePath, token));
  }

  let running: Awaited<ReturnType<typeof startKeygate>>;
  try {
    running = await startKeygate(config, env, logger);
  } catch (error) {
    if (error instanceof StartupError) {
      process.stderr.write(`keygate: ${error.message}\n`);
      return 1;
    }
    throw error;
  }
  // Signals first: a supervisor may send SIGTERM the moment it reads "keygate listening",
  // and without a handler Node would die of it instead of draining.
  process.on("SIGHUP", () => {
    logger.info("SIGHUP: reloading keystore");
    running
      .reload()
      .catch((error: unknown) => logger.error({ err: error }, "keystore reload failed"));
  });
  const stopped = new Promise<number>((resolve) => {
    const shutdown = (signal: NodeJS.Signals) => {
      logger.info({ signal }, "draining in-flight checks");
      running.stop().then(
        () => {
          logger.info("stopped");
          resolve(0);
        },
        (error: unknown) => {
          logger.error({ err: error }, "error while stopping");
          resolve(1);
        },
      );
    };
    process.once("SIGTERM", shutdown);
    process.once("SIGINT", shutdown);
  });

  // V8 reads these only at start-up, so all keygate can do is say so (README: Operations).
  const missingFlags = SERVER_NODE_FLAGS.filter((flag) => !process.execArgv.includes(flag));
  if (missingFlags.length > 0) {
    logger.warn(
      { missing: missingFlags },
      "node was started without keygate's server flags: Checks will cost more CPU after idle spells; run it as npm start does",
    );
  }
  const grpcAddress =
    config.grpcAddress.kind === "unix"
      ? `unix:${config.grpcAddress.path}`
      : `${config.grpcAddress.host}:${running.grpcPort}`;
  logger.info(
    {
      grpc: grpcAddress,
      admin: `${config.adminAddress.host}:${running.adminPort}`,
      mode: config.mode,
      keystore: config.keystorePath,
      generation: running.keystore.generationId,
      ready: running.keystore.generationId !== null,
    },
    "keygate listening",
  );
  return stopped;
}
