/**
 * Listens on 127.0.0.1 at a free port, for the test upstreams (stub-upstream.ts,
 * provider-stub.ts, websocket-upstream.ts): the port, and a close that also ends kept-alive
 * connections so a test's teardown never waits for Envoy's pool to let them go.
 */
import type http from "node:http";
import type { AddressInfo } from "node:net";

export interface Listening {
  readonly port: number;
  close(): Promise<void>;
}

export async function listenOnLoopback(server: http.Server): Promise<Listening> {
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => resolve());
  });
  const { port } = server.address() as AddressInfo;
  return {
    port,
    close: () =>
      new Promise<void>((resolve, reject) => {
        server.closeAllConnections();
        server.close((error) => (error ? reject(error) : resolve()));
      }),
  };
}
