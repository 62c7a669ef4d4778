/**
 * Decoding: reads the few attributes the policy needs straight from the CheckRequest's
 * protobuf bytes (envoy.service.auth.v3, field numbers below), skipping everything else
 * (peer labels, metadata, TLS session) without building it. A missing field becomes an
 * empty value; bytes that are not protobuf throw WireError, which the server answers
 * with a gRPC error (Envoy then fails closed with status_on_error).
 */
import { LENGTH_DELIMITED, WireReader } from "../grpc/protobuf-wire.js";

/** Header Envoy adds to the check request when it had to cut the body at max_request_bytes. */
export const PARTIAL_BODY_HEADER = "x-envoy-auth-partial-body";

export interface CheckAttributes {
  readonly method: string;
  /** Path without query or fragment. */
  readonly path: string;
  /** What followed the path (`?…` or `#…`), or "". */
  readonly query: string;
  /** Lower-case header names; repeated headers joined with "," as Envoy does. */
  readonly headers: ReadonlyMap<string, string>;
  /** The request body as Envoy sent it (raw_body bytes, else the body string), or undefined. */
  readonly body: Buffer | undefined;
  readonly bodyTruncated: boolean;
  readonly contextExtensions: Readonly<Record<string, string>>;
  /** Envoy's x-request-id, or "" when absent. */
  readonly requestId: string;
  /** The downstream peer address Envoy reports (attributes.source), or "" when absent. */
  readonly sourceAddress: string;
}

/** Field numbers of envoy.service.auth.v3 and envoy.config.core.v3 that are read. */
const CHECK_REQUEST_ATTRIBUTES = 1;
const ATTRIBUTES_SOURCE = 1;
const ATTRIBUTES_REQUEST = 4;
const ATTRIBUTES_CONTEXT_EXTENSIONS = 10;
const PEER_ADDRESS = 1;
const ADDRESS_SOCKET_ADDRESS = 1;
const SOCKET_ADDRESS_ADDRESS = 2;
const REQUEST_HTTP = 2;
const HTTP_ID = 1;
const HTTP_METHOD = 2;
const HTTP_HEADERS = 3;
const HTTP_PATH = 4;
const HTTP_BODY = 11;
const HTTP_RAW_BODY = 12;
const HTTP_HEADER_MAP = 13;
const HEADER_MAP_HEADERS = 1;
const HEADER_VALUE_KEY = 1;
const HEADER_VALUE_VALUE = 2;
const HEADER_VALUE_RAW_VALUE = 3;
const MAP_KEY = 1;
const MAP_VALUE = 2;

/** The HttpRequest fields as sent; proto3 semantics (the last occurrence wins). */
interface HttpFields {
  id: string;
  method: string;
  path: string;
  /** The `headers` map (last value per key), then header_map entries in order. */
  headers: Map<string, string>;
  headerList: [name: string, value: string][];
  body: string;
  rawBody: Buffer | undefined;
}

interface Fields {
  readonly http: HttpFields;
  contextExtensions: Record<string, string>;
  sourceAddress: string;
}

function addHeader(headers: Map<string, string>, name: string, value: string): void {
  const key = name.toLowerCase();
  const existing = headers.get(key);
  headers.set(key, existing === undefined ? value : `${existing},${value}`);
}

/** A map<string, string> entry. */
function readEntry(reader: WireReader): [key: string, value: string] {
  let key = "";
  let value = "";
  for (let field = reader.next(); field !== 0; field = reader.next()) {
    if (field === MAP_KEY && reader.wireType === LENGTH_DELIMITED) key = reader.string();
    else if (field === MAP_VALUE && reader.wireType === LENGTH_DELIMITED) value = reader.string();
    else reader.skip();
  }
  return [key, value];
}

/** One header_map HeaderValue: raw_value bytes (as latin1, byte for byte) over value. */
function readHeaderValue(reader: WireReader, into: [string, string][]): void {
  let key = "";
  let value = "";
  let raw: Buffer | undefined;
  for (let field = reader.next(); field !== 0; field = reader.next()) {
    if (reader.wireType !== LENGTH_DELIMITED) reader.skip();
    else if (field === HEADER_VALUE_KEY) key = reader.string();
    else if (field === HEADER_VALUE_VALUE) value = reader.string();
    else if (field === HEADER_VALUE_RAW_VALUE) raw = reader.bytes();
    else reader.skip();
  }
  if (key !== "") into.push([key, raw === undefined ? value : raw.toString("latin1")]);
}

function readHttp(reader: WireReader, http: HttpFields): void {
  for (let field = reader.next(); field !== 0; field = reader.next()) {
    if (reader.wireType !== LENGTH_DELIMITED) reader.skip();
    else if (field === HTTP_HEADERS) {
      const [key, value] = readEntry(reader.message());
      http.headers.set(key, value);
    } else if (field === HTTP_PATH) http.path = reader.string();
    else if (field === HTTP_RAW_BODY) http.rawBody = reader.bytes();
    else if (field === HTTP_BODY) http.body = reader.string();
    else if (field === HTTP_METHOD) http.method = reader.string();
    else if (field === HTTP_ID) http.id = reader.string();
    else if (field === HTTP_HEADER_MAP) {
      const map = reader.message();
      for (let inner = map.next(); inner !== 0; inner = map.next()) {
        if (inner === HEADER_MAP_HEADERS && map.wireType === LENGTH_DELIMITED)
          readHeaderValue(map.message(), http.headerList);
        else map.skip();
      }
    } else reader.skip();
  }
}

/** Descends `path` (embedded message field numbers) and reads the string field `last`. */
function readNestedString(reader: WireReader, path: readonly number[], last: number): string {
  let found = "";
  for (let field = reader.next(); field !== 0; field = reader.next()) {
    if (reader.wireType !== LENGTH_DELIMITED) reader.skip();
    else if (path.length === 0 && field === last) found = reader.string();
    else if (path.length > 0 && field === path[0]) {
      const inner = readNestedString(reader.message(), path.slice(1), last);
      if (inner !== "") found = inner;
    } else reader.skip();
  }
  return found;
}

function readAttributes(reader: WireReader, fields: Fields): void {
  for (let field = reader.next(); field !== 0; field = reader.next()) {
    if (reader.wireType !== LENGTH_DELIMITED) reader.skip();
    else if (field === ATTRIBUTES_REQUEST) {
      const request = reader.message();
      for (let inner = request.next(); inner !== 0; inner = request.next()) {
        if (inner === REQUEST_HTTP && request.wireType === LENGTH_DELIMITED)
          readHttp(request.message(), fields.http);
        else request.skip();
      }
    } else if (field === ATTRIBUTES_CONTEXT_EXTENSIONS) {
      const [key, value] = readEntry(reader.message());
      fields.contextExtensions[key] = value;
    } else if (field === ATTRIBUTES_SOURCE) {
      const address = readNestedString(
        reader.message(),
        [PEER_ADDRESS, ADDRESS_SOCKET_ADDRESS],
        SOCKET_ADDRESS_ADDRESS,
      );
      if (address !== "") fields.sourceAddress = address;
    } else reader.skip();
  }
}

function splitQuery(target: string): [path: string, query: string] {
  const end = target.search(/[?#]/);
  return end === -1 ? [target, ""] : [target.slice(0, end), target.slice(end)];
}

/**
 * Reads the attributes keygate decides on from a CheckRequest's protobuf bytes.
 * @throws WireError when the bytes are not a protobuf message.
 */
export function decodeCheckRequest(wire: Buffer): CheckAttributes {
  const http: HttpFields = {
    id: "",
    method: "",
    path: "",
    headers: new Map(),
    headerList: [],
    body: "",
    rawBody: undefined,
  };
  const fields: Fields = { http, contextExtensions: {}, sourceAddress: "" };
  const reader = new WireReader(wire, 0, wire.length);
  for (let field = reader.next(); field !== 0; field = reader.next()) {
    if (field === CHECK_REQUEST_ATTRIBUTES && reader.wireType === LENGTH_DELIMITED)
      readAttributes(reader.message(), fields);
    else reader.skip();
  }
  const headers = new Map<string, string>();
  for (const [name, value] of http.headers) addHeader(headers, name, value);
  // With encode_raw_headers Envoy sends header_map instead, repeated names apart.
  for (const [name, value] of http.headerList) addHeader(headers, name, value);
  const [path, query] = splitQuery(http.path || (headers.get(":path") ?? ""));
  const body =
    http.rawBody !== undefined && http.rawBody.length > 0
      ? http.rawBody
      : http.body.length > 0
        ? Buffer.from(http.body, "utf8")
        : undefined;
  return {
    method: http.method || (headers.get(":method") ?? ""),
    path,
    query,
    headers,
    body,
    bodyTruncated: headers.get(PARTIAL_BODY_HEADER)?.trim().toLowerCase() === "true",
    contextExtensions: fields.contextExtensions,
    requestId: headers.get("x-request-id") ?? http.id,
    sourceAddress: fields.sourceAddress,
  };
}
