/**
 * Envoy's ext_proc v3 protos as the reference codec (Envoy's side of the Process stream),
 * loaded by @grpc/proto-loader from @grpc/grpc-js-xds's deps like the ext_authz ones in
 * envoy-protos.ts: to encode ProcessingRequests as Envoy would, to decode what keygate
 * answers, and to call the server with grpc-js. Field names stay snake_case.
 */
import type { ServiceDefinition } from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import { LOADER_OPTIONS } from "./envoy-protos.js";

export const EXTERNAL_PROCESSOR_PROTO = "envoy/service/ext_proc/v3/external_processor.proto";
export const EXTERNAL_PROCESSOR_SERVICE = "envoy.service.ext_proc.v3.ExternalProcessor";

let cached: ServiceDefinition | undefined;

/** The ExternalProcessor service definition (loaded once). */
export function externalProcessorService(): ServiceDefinition {
  if (!cached) {
    const definition = protoLoader.loadSync(EXTERNAL_PROCESSOR_PROTO, LOADER_OPTIONS);
    cached = definition[EXTERNAL_PROCESSOR_SERVICE] as unknown as ServiceDefinition;
  }
  return cached;
}

function processMethod() {
  const method = externalProcessorService().Process;
  if (method === undefined) throw new Error("ExternalProcessor/Process missing from the protos");
  return method;
}

/** A ProcessingRequest object (snake_case) as protobuf bytes. */
export function serializeProcessingRequest(request: unknown): Buffer {
  return processMethod().requestSerialize(request);
}

/** A ProcessingResponse's protobuf bytes (without the gRPC prefix) as a snake_case object. */
export function deserializeProcessingResponse(bytes: Buffer): Record<string, unknown> {
  return processMethod().responseDeserialize(bytes) as Record<string, unknown>;
}

/** A google.protobuf.Struct of string fields (protobufjs bundles struct.proto with camelCase names). */
export function stringStruct(fields: Record<string, string>): unknown {
  return {
    fields: Object.fromEntries(
      Object.entries(fields).map(([key, value]) => [key, { stringValue: value }]),
    ),
  };
}
