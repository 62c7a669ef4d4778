/**
 * grpc.health.v1.Health, which Envoy's active health checks (and Kubernetes' gRPC
 * probes) call: Check answers the current status, Watch streams every change. Two
 * names are known, the server as a whole ("") and the Authorization service; both are
 * NOT_SERVING until a keystore generation is loaded and again while draining.
 */
import { GrpcError, GrpcStatus } from "./grpc-status.js";
import { LENGTH_DELIMITED, WireReader, WireWriter } from "./protobuf-wire.js";

export const AUTHORIZATION_SERVICE = "envoy.service.auth.v3.Authorization";
export const HEALTH_CHECK_PATH = "/grpc.health.v1.Health/Check";
export const HEALTH_WATCH_PATH = "/grpc.health.v1.Health/Watch";

// grpc.health.v1: HealthCheckRequest.service = 1, HealthCheckResponse.status = 1.
const REQUEST_SERVICE = 1;
const RESPONSE_STATUS = 1;
const SERVING_STATUS = { SERVING: 1, NOT_SERVING: 2, SERVICE_UNKNOWN: 3 } as const;
type ServingStatus = keyof typeof SERVING_STATUS;

const SERVICES: readonly string[] = ["", AUTHORIZATION_SERVICE];

/** A Watch in progress: gets each new status, framed. */
type Watcher = (framed: Buffer) => void;

export interface HealthService {
  setServing(serving: boolean): void;
  /** The framed HealthCheckResponse for a HealthCheckRequest; NOT_FOUND for other names. */
  check(request: Buffer): Buffer;
  /**
   * Starts a Watch: `send` gets the current status now and every change after it.
   * Returns the function that stops it.
   */
  watch(request: Buffer, send: Watcher): () => void;
}

function serviceOf(request: Buffer): string {
  const reader = new WireReader(request, 0, request.length);
  let service = "";
  for (let field = reader.next(); field !== 0; field = reader.next()) {
    if (field === REQUEST_SERVICE && reader.wireType === LENGTH_DELIMITED)
      service = reader.string();
    else reader.skip();
  }
  return service;
}

function framedStatus(status: ServingStatus): Buffer {
  const writer = new WireWriter(16);
  writer.varint(RESPONSE_STATUS, SERVING_STATUS[status]);
  return writer.framed();
}

/**
 * `ready` is asked on every Check, so the answer never lags behind the keystore (a Check
 * may be allowed the moment a generation is applied); Watches hear of changes through
 * `setServing`, which also turns the status off for a drain.
 */
export function createHealthService(ready: () => boolean): HealthService {
  let status: ServingStatus = "NOT_SERVING";
  let serving = false;
  const watchers = new Map<Watcher, string>();
  const current = (): ServingStatus => (serving && ready() ? "SERVING" : "NOT_SERVING");
  const statusOf = (service: string): ServingStatus =>
    SERVICES.includes(service) ? current() : "SERVICE_UNKNOWN";
  return {
    setServing(next) {
      serving = next;
      if (current() === status) return;
      status = current();
      for (const [send, service] of watchers) send(framedStatus(statusOf(service)));
    },
    check(request) {
      const service = serviceOf(request);
      if (!SERVICES.includes(service))
        throw new GrpcError(GrpcStatus.NOT_FOUND, `unknown service ${JSON.stringify(service)}`);
      return framedStatus(current());
    },
    watch(request, send) {
      const service = serviceOf(request);
      watchers.set(send, service);
      send(framedStatus(statusOf(service)));
      return () => watchers.delete(send);
    },
  };
}
