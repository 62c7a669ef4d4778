/**
 * Loads Envoy's ext_authz v3 protos from the `deps/` folders that @grpc/grpc-js-xds
 * ships (no proto files are copied into this repository) and exposes the Authorization
 * service definition. Field names stay snake_case as on the wire.
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

/** The envoy.service.auth.v3.Authorization service definition (loaded once). */
export function authorizationService(): ServiceDefinition {
  if (!cached) {
    const definition = protoLoader.loadSync(EXTERNAL_AUTH_PROTO, LOADER_OPTIONS);
    cached = definition[AUTHORIZATION_SERVICE] as unknown as ServiceDefinition;
  }
  return cached;
}
