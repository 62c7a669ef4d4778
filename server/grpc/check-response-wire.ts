/**
 * Encodes keygate's CheckResponse (build-response.ts) as envoy.service.auth.v3
 * protobuf, already framed for gRPC. Field numbers are Envoy's; the round trip against
 * the reference protos is tested in test/unit/check-wire.test.ts.
 */
import type { CheckResponse } from "../auth/build-response.js";
import { WireWriter } from "./protobuf-wire.js";

// envoy.service.auth.v3.CheckResponse and its parts.
const RESPONSE_STATUS = 1;
const RESPONSE_DENIED = 2;
const RESPONSE_OK = 3;
const RESPONSE_DYNAMIC_METADATA = 4;
const STATUS_CODE = 1; // google.rpc.Status
const STATUS_MESSAGE = 2;
const DENIED_STATUS = 1; // DeniedHttpResponse
const DENIED_HEADERS = 2;
const DENIED_BODY = 3;
const HTTP_STATUS_CODE = 1; // envoy.type.v3.HttpStatus
const OK_HEADERS = 2; // OkHttpResponse
const OK_HEADERS_TO_REMOVE = 5;
const OPTION_HEADER = 1; // envoy.config.core.v3.HeaderValueOption
const OPTION_APPEND_ACTION = 3;
const HEADER_KEY = 1; // HeaderValue
const HEADER_VALUE = 2;
const OVERWRITE_IF_EXISTS_OR_ADD = 2;
const STRUCT_FIELDS = 1; // google.protobuf.Struct: map<string, Value>
const ENTRY_KEY = 1;
const ENTRY_VALUE = 2;
const VALUE_NUMBER = 2; // google.protobuf.Value
const VALUE_STRING = 3;
const VALUE_BOOL = 4;

type HeaderOptions = NonNullable<CheckResponse["ok_response"]>["headers"];
type Fields = NonNullable<CheckResponse["dynamic_metadata"]>["fields"];

function writeHeaders(writer: WireWriter, field: number, headers: HeaderOptions): void {
  for (const { header } of headers) {
    const option = writer.begin(field);
    const value = writer.begin(OPTION_HEADER);
    writer.string(HEADER_KEY, header.key);
    writer.string(HEADER_VALUE, header.value);
    writer.end(value);
    writer.varint(OPTION_APPEND_ACTION, OVERWRITE_IF_EXISTS_OR_ADD);
    writer.end(option);
  }
}

function writeStruct(writer: WireWriter, field: number, fields: Fields): void {
  const struct = writer.begin(field);
  for (const key of Object.keys(fields)) {
    const value = fields[key];
    if (value === undefined) continue;
    const entry = writer.begin(STRUCT_FIELDS);
    writer.string(ENTRY_KEY, key);
    const inner = writer.begin(ENTRY_VALUE);
    if ("stringValue" in value) writer.string(VALUE_STRING, value.stringValue);
    else if ("numberValue" in value) writer.double(VALUE_NUMBER, value.numberValue);
    else writer.bool(VALUE_BOOL, value.boolValue);
    writer.end(inner);
    writer.end(entry);
  }
  writer.end(struct);
}

/** The CheckResponse as a gRPC length-prefixed protobuf message. */
export function encodeCheckResponse(response: CheckResponse): Buffer {
  const writer = new WireWriter();
  const status = writer.begin(RESPONSE_STATUS);
  // Written even when 0 (OK): proto3 readers default it anyway, and a decoder that does
  // not apply defaults still sees the code.
  writer.varint(STATUS_CODE, response.status.code);
  if (response.status.message) writer.string(STATUS_MESSAGE, response.status.message);
  writer.end(status);
  const denied = response.denied_response;
  if (denied !== undefined) {
    const slot = writer.begin(RESPONSE_DENIED);
    const httpStatus = writer.begin(DENIED_STATUS);
    writer.varint(HTTP_STATUS_CODE, denied.status.code);
    writer.end(httpStatus);
    writeHeaders(writer, DENIED_HEADERS, denied.headers);
    writer.string(DENIED_BODY, denied.body);
    writer.end(slot);
  }
  const ok = response.ok_response;
  if (ok !== undefined) {
    const slot = writer.begin(RESPONSE_OK);
    writeHeaders(writer, OK_HEADERS, ok.headers);
    for (const name of ok.headers_to_remove) writer.string(OK_HEADERS_TO_REMOVE, name);
    writer.end(slot);
  }
  if (response.dynamic_metadata !== undefined)
    writeStruct(writer, RESPONSE_DYNAMIC_METADATA, response.dynamic_metadata.fields);
  return writer.framed();
}
