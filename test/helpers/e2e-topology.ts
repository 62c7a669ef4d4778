/**
 * What every e2e file shares about the Envoy + keygate + stub upstream topology: starting
 * keygate and the reference Envoy in front of it, the teardown (on a failed test, the tail
 * of Envoy's and keygate's output; after the file, stop everything and remove the temp
 * dir) and waiting for Envoy's access log line.
 */
import { rmSync } from "node:fs";
import path from "node:path";
import type { TestFn } from "ava";
import type { RenderEnvoyOptions } from "../../scripts/render-envoy-config.mjs";
import { type EnvoyProcess, renderEnvoyConfig, startEnvoy } from "./envoy.js";
import { type KeygateProcess, startKeygate } from "./keygate-process.js";
import type { StubUpstream } from "./stub-upstream.js";

/** How much of each process's output a failed test prints. */
const LOG_TAIL_CHARS = 20_000;

export interface TopologyContext {
  dir?: string;
  upstream?: StubUpstream;
  keygate?: KeygateProcess;
  envoy?: EnvoyProcess;
}

/**
 * Starts keygate on `keystore` (its database in `dir`), then envoy/envoy.yaml in front of
 * it and the upstream at `upstreamPort`: keygate first, since Envoy health-checks it as
 * soon as it starts. Both are stored in the context for the teardown.
 */
export async function startKeygateBehindEnvoy(
  context: TopologyContext,
  options: {
    readonly dir: string;
    readonly keystore: string;
    readonly upstreamPort: number;
    readonly env?: Readonly<Record<string, string>>;
    readonly envoy?: Partial<RenderEnvoyOptions>;
  },
): Promise<{ keygate: KeygateProcess; envoy: EnvoyProcess }> {
  const keygate = await startKeygate({
    keystore: options.keystore,
    db: path.join(options.dir, "keystore.db"),
    ...(options.env === undefined ? {} : { env: options.env }),
  });
  context.keygate = keygate;
  const envoy = await startEnvoy({
    config: renderEnvoyConfig({
      listenPort: 0,
      adminPort: 0,
      keygatePort: keygate.grpcPort,
      upstreamPort: options.upstreamPort,
      ...options.envoy,
    }),
  });
  context.envoy = envoy;
  return { keygate, envoy };
}

export function registerTopologyTeardown<C extends TopologyContext>(test: TestFn<C>): void {
  test.afterEach.always((t) => {
    if (t.passed) return;
    const tail = (text: string | undefined): string => (text ?? "").slice(-LOG_TAIL_CHARS);
    t.log(`--- envoy output (tail) ---\n${tail(t.context.envoy?.output())}`);
    t.log(`--- keygate output (tail) ---\n${tail(t.context.keygate?.output())}`);
  });
  test.after.always(async (t) => {
    await t.context.envoy?.stop();
    await t.context.keygate?.stop("SIGKILL");
    await t.context.upstream?.close();
    if (t.context.dir) rmSync(t.context.dir, { recursive: true, force: true });
  });
}

/** Envoy's access log line for a request id; Envoy flushes logs asynchronously, so this polls. */
export async function accessLogLine(
  envoy: EnvoyProcess,
  requestId: string,
): Promise<Record<string, unknown>> {
  const deadline = Date.now() + 5_000;
  for (;;) {
    const line = envoy.accessLog().find((entry) => entry.request_id === requestId);
    if (line !== undefined) return line;
    if (Date.now() > deadline) throw new Error(`no access log line for request ${requestId}`);
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
}
