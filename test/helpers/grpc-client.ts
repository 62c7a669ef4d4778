/**
 * A real gRPC client for keygate's Authorization and Health services, as Envoy talks to them.
 */
import {
  type ChannelCredentials,
  type Client,
  credentials,
  loadPackageDefinition,
  makeGenericClientConstructor,
  type ServiceError,
} from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import { protoPath as healthProtoPath } from "grpc-health-check";
import type { CheckResponse } from "../../server/auth/build-response.js";
import { AUTHORIZATION_SERVICE, EXTERNAL_AUTH_PROTO, LOADER_OPTIONS } from "./envoy-protos.js";

export interface CheckClient {
  check(request: unknown): Promise<CheckResponse>;
  health(service?: string): Promise<string>;
  close(): void;
}

type Unary = (
  request: unknown,
  callback: (error: ServiceError | null, response: unknown) => void,
) => void;

function promisify<T>(method: Unary, request: unknown): Promise<T> {
  return new Promise((resolve, reject) =>
    method(request, (error, response) => (error ? reject(error) : resolve(response as T))),
  );
}

/** Connects to keygate at target (e.g. "127.0.0.1:9191"), in plaintext unless `channel` says TLS. */
export function createCheckClient(
  target: string,
  channel: ChannelCredentials = credentials.createInsecure(),
): CheckClient {
  // Enums as numbers, so tests compare HTTP status codes as Envoy reads them.
  const definition = protoLoader.loadSync(EXTERNAL_AUTH_PROTO, {
    ...LOADER_OPTIONS,
    enums: Number,
  });
  const Authorization = makeGenericClientConstructor(
    definition[AUTHORIZATION_SERVICE] as never,
    "Authorization",
  );
  const authorization = new Authorization(target, channel, {
    "grpc.max_send_message_length": 64 * 1024 * 1024,
  }) as unknown as Client & { Check: Unary };
  const healthPackage = loadPackageDefinition(
    protoLoader.loadSync(healthProtoPath, { keepCase: true, enums: String }),
  ) as unknown as {
    grpc: {
      health: { v1: { Health: new (target: string, creds: unknown) => Client & { Check: Unary } } };
    };
  };
  const health = new healthPackage.grpc.health.v1.Health(target, channel);
  return {
    check: (request) => promisify<CheckResponse>(authorization.Check.bind(authorization), request),
    health: async (service = "") =>
      (await promisify<{ status: string }>(health.Check.bind(health), { service })).status,
    close() {
      authorization.close();
      health.close();
    },
  };
}

/** The response's ok_response headers as a plain object. */
export function setHeaders(response: CheckResponse): Record<string, string> {
  return Object.fromEntries(
    (response.ok_response?.headers ?? []).map((h) => [h.header.key, h.header.value]),
  );
}

/** The denial body, parsed. */
export function denialOf(response: CheckResponse): {
  type: string;
  message: string;
  request_id: string;
  status: number;
} {
  const body = JSON.parse(response.denied_response?.body ?? "null") as {
    type: string;
    message: string;
    request_id: string;
  };
  return { ...body, status: response.denied_response?.status.code ?? 0 };
}
