/**
 * The reference codec: Envoy's ext_authz v3 protos, loaded by @grpc/proto-loader from
 * the `deps/` folders that @grpc/grpc-js-xds ships (no proto files are copied into this
 * repository). keygate's server reads and writes the wire format itself
 * (server/auth/check-attributes.ts, server/grpc/check-response-wire.ts); tests and
 * benchmarks use this definition as Envoy's side: to encode CheckRequests, to call the
 * server with grpc-js, and to check what the server answers. Field names stay snake_case.
 */
import { createRequire } from "node:module";
import path from "node:path";
import type { ServiceDefinition } from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";

const require = createRequire(import.meta.url);
const XDS_DEPS = path.join(path.dirname(require.resolve("@grpc/grpc-js-xds/package.json")), "deps");

export const PROTO_INCLUDE_DIRS = [
  path.join(XDS_DEPS, "envoy-api"),
  path.join(XDS_DEPS, "xds"),
  path.join(XDS_DEPS, "googleapis"),
  path.join(XDS_DEPS, "protoc-gen-validate"),
] as const;

export const EXTERNAL_AUTH_PROTO = "envoy/service/auth/v3/external_auth.proto";
export const AUTHORIZATION_SERVICE = "envoy.service.auth.v3.Authorization";

/** keepCase: snake_case fields as Envoy documents them; bytes as Buffers; enums as names. */
export const LOADER_OPTIONS: protoLoader.Options = {
  keepCase: true,
  longs: String,
  enums: String,
  bytes: Buffer,
  defaults: false,
  oneofs: true,
  includeDirs: [...PROTO_INCLUDE_DIRS],
};

let cached: ServiceDefinition | undefined;

/** A CheckRequest object (snake_case, as test/helpers/check-request.ts builds it) as protobuf bytes. */
export function serializeCheckRequest(request: unknown): Buffer {
  return checkMethod().requestSerialize(request);
}

/** A CheckResponse's protobuf bytes (without the gRPC prefix) as a snake_case object. */
export function deserializeCheckResponse(bytes: Buffer): Record<string, unknown> {
  return checkMethod().responseDeserialize(bytes) as Record<string, unknown>;
}

function checkMethod() {
  const method = authorizationService().Check;
  if (method === undefined) throw new Error("Authorization/Check missing from the protos");
  return method;
}

/** The envoy.service.auth.v3.Authorization service definition (loaded once). */
export function authorizationService(): ServiceDefinition {
  if (!cached) {
    const definition = protoLoader.loadSync(EXTERNAL_AUTH_PROTO, LOADER_OPTIONS);
    cached = definition[AUTHORIZATION_SERVICE] as unknown as ServiceDefinition;
  }
  return cached;
}
