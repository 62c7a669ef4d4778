/**
 * The gRPC server: Authorization/Check plus the standard grpc.health.v1 service that
 * Envoy's active health checks use. NOT_SERVING until a keystore generation is loaded.
 */
import { Server, ServerCredentials, type UntypedServiceImplementation } from "@grpc/grpc-js";
import { HealthImplementation } from "grpc-health-check";
import type { ListenAddress } from "../config.js";
import { AUTHORIZATION_SERVICE, authorizationService } from "./protos.js";

export interface GrpcServerOptions {
  readonly address: ListenAddress;
  readonly maxReceiveBytes: number;
  readonly checkService: UntypedServiceImplementation;
  /** TLS or mutual TLS (see tls-credentials.ts); plaintext when absent. */
  readonly credentials?: ServerCredentials;
}

export interface RunningGrpcServer {
  /** Bound TCP port (0 for unix sockets). */
  readonly port: number;
  setServing(serving: boolean): void;
  /** Stops accepting calls, lets in-flight ones finish, forces closed after the timeout. */
  drain(timeoutMs: number): Promise<void>;
}

/** Health services reported: the overall server and the Authorization service by name. */
const HEALTH_SERVICES = ["", AUTHORIZATION_SERVICE] as const;

function bindTarget(address: ListenAddress): string {
  if (address.kind === "unix") return `unix:${address.path}`;
  return address.host.includes(":")
    ? `[${address.host}]:${address.port}`
    : `${address.host}:${address.port}`;
}

/**
 * Starts the gRPC server.
 * @throws Error when the address cannot be bound.
 */
export async function startGrpcServer(options: GrpcServerOptions): Promise<RunningGrpcServer> {
  const server = new Server({
    "grpc.max_receive_message_length": options.maxReceiveBytes,
    "grpc.max_send_message_length": 4 * 1024 * 1024,
  });
  server.addService(authorizationService(), options.checkService);
  const health = new HealthImplementation(
    Object.fromEntries(HEALTH_SERVICES.map((name) => [name, "NOT_SERVING"])),
  );
  health.addToServer(server);

  const port = await new Promise<number>((resolve, reject) => {
    server.bindAsync(
      bindTarget(options.address),
      options.credentials ?? ServerCredentials.createInsecure(),
      (error, bound) => (error ? reject(error) : resolve(bound)),
    );
  });

  return {
    port,
    setServing(serving) {
      for (const name of HEALTH_SERVICES)
        health.setStatus(name, serving ? "SERVING" : "NOT_SERVING");
    },
    drain(timeoutMs) {
      for (const name of HEALTH_SERVICES) health.setStatus(name, "NOT_SERVING");
      return new Promise((resolve) => {
        const timer = setTimeout(() => server.forceShutdown(), timeoutMs);
        timer.unref();
        server.tryShutdown(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    },
  };
}
