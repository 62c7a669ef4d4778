/**
 * The subset of envoy.service.ext_proc.v3 keygate reads and writes on the response path:
 * ProcessingRequest in (headers, body chunks, the ext_authz dynamic metadata and the
 * attributes Envoy was asked for), ProcessingResponse out (CONTINUE with an optional
 * header mutation and mode override, or an immediate response). Field numbers are those of
 * external_processor.proto and config/core/v3/base.proto in @grpc/grpc-js-xds's deps;
 * the round trip against those protos is tested in test/unit/ext-proc-wire.test.ts.
 * Unknown fields are skipped; bytes that are not protobuf throw WireError.
 */
import {
  FIXED64,
  LENGTH_DELIMITED,
  VARINT,
  WireReader,
  WireWriter,
} from "../grpc/protobuf-wire.js";

/** Which part of the HTTP exchange a ProcessingRequest carries (its oneof, by field number). */
export const PART = {
  request_headers: 2,
  response_headers: 3,
  request_body: 4,
  response_body: 5,
  request_trailers: 6,
  response_trailers: 7,
} as const;
export type Part = keyof typeof PART;

const PART_BY_FIELD = new Map<number, Part>(
  Object.entries(PART).map(([name, field]) => [field, name as Part]),
);

// ProcessingRequest
const REQUEST_METADATA_CONTEXT = 8;
const REQUEST_ATTRIBUTES = 9;
const REQUEST_OBSERVABILITY_MODE = 10;
// HttpHeaders / HttpBody / HttpTrailers
const HEADERS_HEADERS = 1;
const HEADERS_END_OF_STREAM = 3;
const BODY_BODY = 1;
const BODY_END_OF_STREAM = 2;
// config.core.v3: HeaderMap, HeaderValue, Metadata
const HEADER_MAP_HEADERS = 1;
const HEADER_KEY = 1;
const HEADER_VALUE = 2;
const HEADER_RAW_VALUE = 3;
const METADATA_FILTER_METADATA = 1;
// map entries, google.protobuf.Struct and Value
const ENTRY_KEY = 1;
const ENTRY_VALUE = 2;
const STRUCT_FIELDS = 1;
const VALUE_NUMBER = 2;
const VALUE_STRING = 3;
const VALUE_BOOL = 4;

/** One decoded ProcessingRequest: only what the response path uses. */
export interface ProcessingRequest {
  /** undefined when Envoy sent none of the oneof's parts (a malformed request). */
  readonly part: Part | undefined;
  /** Lower-case names; repeated headers joined with ", " (set-cookie aside, nothing keygate reads repeats). */
  readonly headers: ReadonlyMap<string, string>;
  /** The body chunk (response_body / request_body); a view of the message. */
  readonly body: Buffer;
  readonly endOfStream: boolean;
  /** Scalar fields of `metadataNamespace` in metadata_context, numbers and booleans as text. */
  readonly metadata: ReadonlyMap<string, string>;
  /** Scalar fields of every attributes Struct (e.g. `request.id`), by attribute name. */
  readonly attributes: ReadonlyMap<string, string>;
  /** Sent by a filter in observability_mode: Envoy ignores any answer and does not wait. */
  readonly observabilityMode: boolean;
}

interface Decoding {
  part: Part | undefined;
  headers: Map<string, string>;
  body: Buffer;
  endOfStream: boolean;
  metadata: Map<string, string>;
  attributes: Map<string, string>;
  observabilityMode: boolean;
}

/** The next field must be length-delimited to be read as a message or string. */
function delimited(reader: WireReader): boolean {
  if (reader.wireType === LENGTH_DELIMITED) return true;
  reader.skip();
  return false;
}

function readHeaderValue(reader: WireReader, headers: Map<string, string>): void {
  let key = "";
  let value = "";
  let raw: Buffer | undefined;
  for (let field = reader.next(); field !== 0; field = reader.next()) {
    if (field === HEADER_KEY && delimited(reader)) key = reader.string().toLowerCase();
    else if (field === HEADER_VALUE && delimited(reader)) value = reader.string();
    else if (field === HEADER_RAW_VALUE && delimited(reader)) raw = reader.bytes();
    else if (field !== HEADER_KEY && field !== HEADER_VALUE && field !== HEADER_RAW_VALUE)
      reader.skip();
  }
  if (key === "") return;
  // Header bytes are not always UTF-8: latin1 keeps them byte for byte.
  const text = raw === undefined ? value : raw.toString("latin1");
  const earlier = headers.get(key);
  headers.set(key, earlier === undefined ? text : `${earlier}, ${text}`);
}

function readHeaderMap(reader: WireReader, headers: Map<string, string>): void {
  for (let field = reader.next(); field !== 0; field = reader.next()) {
    if (field === HEADER_MAP_HEADERS && delimited(reader)) {
      const outer = reader.enter();
      readHeaderValue(reader, headers);
      reader.leave(outer);
    } else if (field !== HEADER_MAP_HEADERS) reader.skip();
  }
}

/** A google.protobuf.Value's scalar as text; undefined for null, structs and lists. */
function readScalar(reader: WireReader): string | undefined {
  let scalar: string | undefined;
  for (let field = reader.next(); field !== 0; field = reader.next()) {
    if (field === VALUE_STRING && delimited(reader)) scalar = reader.string();
    else if (field === VALUE_NUMBER && reader.wireType === FIXED64)
      scalar = String(reader.double());
    else if (field === VALUE_BOOL && reader.wireType === VARINT)
      scalar = reader.varint() === 0 ? "false" : "true";
    else if (field !== VALUE_STRING) reader.skip();
  }
  return scalar;
}

/** A map entry (key 1, message value 2): the key, and what `value` read inside the value. */
function readEntry<T>(reader: WireReader, value: () => T): [key: string, value: T | undefined] {
  let key = "";
  let result: T | undefined;
  for (let field = reader.next(); field !== 0; field = reader.next()) {
    if (field === ENTRY_KEY && delimited(reader)) key = reader.string();
    else if (field === ENTRY_VALUE && delimited(reader)) {
      const outer = reader.enter();
      result = value();
      reader.leave(outer);
    } else if (field !== ENTRY_KEY && field !== ENTRY_VALUE) reader.skip();
  }
  return [key, result];
}

/** A Struct's scalar fields into `into` (the reader is inside the Struct). */
function readStruct(reader: WireReader, into: Map<string, string>): void {
  for (let field = reader.next(); field !== 0; field = reader.next()) {
    if (field !== STRUCT_FIELDS) reader.skip();
    if (field !== STRUCT_FIELDS || !delimited(reader)) continue;
    const outer = reader.enter();
    const [key, scalar] = readEntry(reader, () => readScalar(reader));
    if (scalar !== undefined) into.set(key, scalar);
    reader.leave(outer);
  }
}

/**
 * One map<string, Struct> entry: its Struct's scalars go into `into` when `wanted(key)`.
 * Protobuf allows the value before the key, so the Struct is read aside first.
 */
function readStructMapEntry(
  reader: WireReader,
  wanted: (key: string) => boolean,
  into: Map<string, string>,
): void {
  const fields = new Map<string, string>();
  const [key] = readEntry(reader, () => readStruct(reader, fields));
  if (!wanted(key)) return;
  for (const [name, value] of fields) into.set(name, value);
}

function readStructMap(
  reader: WireReader,
  field: number,
  wanted: (key: string) => boolean,
  into: Map<string, string>,
): void {
  for (let inner = reader.next(); inner !== 0; inner = reader.next()) {
    if (inner !== field) reader.skip();
    if (inner !== field || !delimited(reader)) continue;
    const outer = reader.enter();
    readStructMapEntry(reader, wanted, into);
    reader.leave(outer);
  }
}

function readPart(reader: WireReader, part: Part, into: Decoding): void {
  const isHeaders = part.endsWith("_headers");
  const isBody = part.endsWith("_body");
  for (let field = reader.next(); field !== 0; field = reader.next()) {
    if (isHeaders && field === HEADERS_HEADERS && delimited(reader)) {
      const outer = reader.enter();
      readHeaderMap(reader, into.headers);
      reader.leave(outer);
    } else if (isHeaders && field === HEADERS_END_OF_STREAM && reader.wireType === VARINT)
      into.endOfStream = reader.varint() !== 0;
    else if (isBody && field === BODY_BODY && delimited(reader)) into.body = reader.bytes();
    else if (isBody && field === BODY_END_OF_STREAM && reader.wireType === VARINT)
      into.endOfStream = reader.varint() !== 0;
    else if (!(isHeaders && field === HEADERS_HEADERS) && !(isBody && field === BODY_BODY))
      reader.skip();
  }
}

/**
 * Decodes a ProcessingRequest (without its gRPC prefix).
 * @param metadataNamespace the filter_metadata namespace whose fields are returned.
 * @throws WireError when the bytes are not a well-formed protobuf message.
 */
export function decodeProcessingRequest(
  wire: Buffer,
  metadataNamespace: string,
): ProcessingRequest {
  const into: Decoding = {
    part: undefined,
    headers: new Map(),
    body: Buffer.alloc(0),
    endOfStream: false,
    metadata: new Map(),
    attributes: new Map(),
    observabilityMode: false,
  };
  const reader = new WireReader(wire, 0, wire.length);
  for (let field = reader.next(); field !== 0; field = reader.next()) {
    if (field === REQUEST_OBSERVABILITY_MODE && reader.wireType === VARINT) {
      into.observabilityMode = reader.varint() !== 0;
      continue;
    }
    const part = PART_BY_FIELD.get(field);
    const known =
      part !== undefined || field === REQUEST_METADATA_CONTEXT || field === REQUEST_ATTRIBUTES;
    if (!known) reader.skip();
    if (!known || !delimited(reader)) continue;
    const outer = reader.enter();
    if (part !== undefined) {
      into.part = part;
      readPart(reader, part, into);
    } else if (field === REQUEST_METADATA_CONTEXT)
      readStructMap(
        reader,
        METADATA_FILTER_METADATA,
        (key) => key === metadataNamespace,
        into.metadata,
      );
    else readStructMapEntry(reader, () => true, into.attributes);
    reader.leave(outer);
  }
  return into;
}

// ProcessingResponse
const RESPONSE_IMMEDIATE = 7;
const RESPONSE_MODE_OVERRIDE = 9;
const HEADERS_OR_BODY_RESPONSE = 1; // HeadersResponse.response, BodyResponse.response
const COMMON_HEADER_MUTATION = 2;
const MUTATION_SET_HEADERS = 1;
const MUTATION_REMOVE_HEADERS = 2;
const OPTION_HEADER = 1;
const OPTION_APPEND_ACTION = 3;
const OVERWRITE_IF_EXISTS_OR_ADD = 2;
const IMMEDIATE_STATUS = 1;
const IMMEDIATE_HEADERS = 2;
const IMMEDIATE_BODY = 3;
const IMMEDIATE_DETAILS = 5;
const HTTP_STATUS_CODE = 1;

/** The ProcessingResponse oneof field answering each part (ProcessingResponse 1-6). */
const ANSWER_FIELD: Record<Part, number> = {
  request_headers: 1,
  response_headers: 2,
  request_body: 3,
  response_body: 4,
  request_trailers: 5,
  response_trailers: 6,
};

/** ProcessingMode's send modes (processing_mode.proto). */
export const HeaderSendMode = { DEFAULT: 0, SEND: 1, SKIP: 2 } as const;
export const BodySendMode = { NONE: 0, STREAMED: 1, BUFFERED: 2, BUFFERED_PARTIAL: 3 } as const;

/** A whole ProcessingMode: Envoy replaces its mode with this one, field for field. */
export interface ProcessingMode {
  readonly requestHeaderMode: number;
  readonly responseHeaderMode: number;
  readonly requestBodyMode: number;
  readonly responseBodyMode: number;
  readonly requestTrailerMode: number;
  readonly responseTrailerMode: number;
}

export type ProcessingResponse =
  | {
      readonly kind: "continue";
      /** The part being answered: the response's oneof field must match the request's. */
      readonly part: Part;
      readonly setHeaders?: readonly (readonly [name: string, value: string])[];
      readonly removeHeaders?: readonly string[];
      /** Only honoured in answer to headers, and only with allow_mode_override. */
      readonly modeOverride?: ProcessingMode;
    }
  | {
      readonly kind: "immediate";
      readonly status: number;
      readonly headers: readonly (readonly [name: string, value: string])[];
      readonly body: string;
      /** Envoy's response code details (access log %RESPONSE_CODE_DETAILS%). */
      readonly details: string;
    };

function writeSetHeaders(
  writer: WireWriter,
  headers: readonly (readonly [string, string])[],
): void {
  for (const [name, value] of headers) {
    const option = writer.begin(MUTATION_SET_HEADERS);
    const header = writer.begin(OPTION_HEADER);
    writer.string(HEADER_KEY, name);
    // raw_value: Envoy sends and reads header values as bytes since 1.30.
    writer.string(HEADER_RAW_VALUE, value);
    writer.end(header);
    writer.varint(OPTION_APPEND_ACTION, OVERWRITE_IF_EXISTS_OR_ADD);
    writer.end(option);
  }
}

function writeMode(writer: WireWriter, mode: ProcessingMode): void {
  const slot = writer.begin(RESPONSE_MODE_OVERRIDE);
  const values = [
    mode.requestHeaderMode,
    mode.responseHeaderMode,
    mode.requestBodyMode,
    mode.responseBodyMode,
    mode.requestTrailerMode,
    mode.responseTrailerMode,
  ];
  values.forEach((value, index) => {
    if (value !== 0) writer.varint(index + 1, value);
  });
  writer.end(slot);
}

/** The ProcessingResponse as a gRPC length-prefixed protobuf message. */
export function encodeProcessingResponse(response: ProcessingResponse): Buffer {
  const writer = new WireWriter(response.kind === "immediate" ? 512 : 64);
  if (response.kind === "immediate") {
    const slot = writer.begin(RESPONSE_IMMEDIATE);
    const status = writer.begin(IMMEDIATE_STATUS);
    writer.varint(HTTP_STATUS_CODE, response.status);
    writer.end(status);
    const headers = writer.begin(IMMEDIATE_HEADERS);
    writeSetHeaders(writer, response.headers);
    writer.end(headers);
    writer.string(IMMEDIATE_BODY, response.body);
    writer.string(IMMEDIATE_DETAILS, response.details);
    writer.end(slot);
    return writer.framed();
  }
  const answer = writer.begin(ANSWER_FIELD[response.part]);
  const common = writer.begin(HEADERS_OR_BODY_RESPONSE);
  const set = response.setHeaders ?? [];
  const remove = response.removeHeaders ?? [];
  if (set.length > 0 || remove.length > 0) {
    const mutation = writer.begin(COMMON_HEADER_MUTATION);
    writeSetHeaders(writer, set);
    for (const name of remove) writer.string(MUTATION_REMOVE_HEADERS, name);
    writer.end(mutation);
  }
  writer.end(common);
  writer.end(answer);
  if (response.modeOverride !== undefined) writeMode(writer, response.modeOverride);
  return writer.framed();
}
