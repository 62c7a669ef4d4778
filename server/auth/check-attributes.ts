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

/** What is read, proto3 style: a later occurrence of a field replaces an earlier one. */
interface Fields {
  id: string;
  method: string;
  path: string;
  /** Lower-case names; header_map's repeated names joined with "," as Envoy joins them. */
  readonly headers: Map<string, string>;
  body: string;
  rawBody: Buffer | undefined;
  readonly contextExtensions: Record<string, string>;
  sourceAddress: string;
}

function addHeader(headers: Map<string, string>, name: string, value: string): void {
  const key = name.toLowerCase();
  const existing = headers.get(key);
  headers.set(key, existing === undefined ? value : `${existing},${value}`);
}

/** A map<string, string> entry at the cursor. */
function readEntry(reader: WireReader): [key: string, value: string] {
  const outer = reader.enter();
  let key = "";
  let value = "";
  for (let field = reader.next(); field !== 0; field = reader.next()) {
    if (field === MAP_KEY && reader.wireType === LENGTH_DELIMITED) key = reader.string();
    else if (field === MAP_VALUE && reader.wireType === LENGTH_DELIMITED) value = reader.string();
    else reader.skip();
  }
  reader.leave(outer);
  return [key, value];
}

/** header_map's HeaderValues: raw_value bytes (as latin1, byte for byte) over value. */
function readHeaderMap(reader: WireReader, headers: Map<string, string>): void {
  const outer = reader.enter();
  for (let field = reader.next(); field !== 0; field = reader.next()) {
    if (field !== HEADER_MAP_HEADERS || reader.wireType !== LENGTH_DELIMITED) {
      reader.skip();
      continue;
    }
    const header = reader.enter();
    let key = "";
    let value = "";
    let raw: Buffer | undefined;
    for (let inner = reader.next(); inner !== 0; inner = reader.next()) {
      if (reader.wireType !== LENGTH_DELIMITED) reader.skip();
      else if (inner === HEADER_VALUE_KEY) key = reader.string();
      else if (inner === HEADER_VALUE_VALUE) value = reader.string();
      else if (inner === HEADER_VALUE_RAW_VALUE) raw = reader.bytes();
      else reader.skip();
    }
    reader.leave(header);
    if (key !== "") addHeader(headers, key, raw === undefined ? value : raw.toString("latin1"));
  }
  reader.leave(outer);
}

function readHttp(reader: WireReader, fields: Fields): void {
  const outer = reader.enter();
  for (let field = reader.next(); field !== 0; field = reader.next()) {
    if (reader.wireType !== LENGTH_DELIMITED) reader.skip();
    else if (field === HTTP_HEADERS) {
      // A map: the last entry for a name wins. Envoy sends names in lower case.
      const [key, value] = readEntry(reader);
      fields.headers.set(key.toLowerCase(), value);
    } else if (field === HTTP_PATH) fields.path = reader.string();
    else if (field === HTTP_RAW_BODY) fields.rawBody = reader.bytes();
    else if (field === HTTP_BODY) fields.body = reader.string();
    else if (field === HTTP_METHOD) fields.method = reader.string();
    else if (field === HTTP_ID) fields.id = reader.string();
    else if (field === HTTP_HEADER_MAP) readHeaderMap(reader, fields.headers);
    else reader.skip();
  }
  reader.leave(outer);
}

/** Peer.address.socket_address.address: "" when Envoy reports a pipe or internal address. */
const SOURCE_ADDRESS_PATH = [PEER_ADDRESS, ADDRESS_SOCKET_ADDRESS, SOCKET_ADDRESS_ADDRESS];

/**
 * The string at `path` (field numbers, each but the last an embedded message) in the
 * embedded message at the cursor, or "".
 */
function readStringAt(reader: WireReader, path: readonly number[], depth = 0): string {
  let found = "";
  const outer = reader.enter();
  for (let field = reader.next(); field !== 0; field = reader.next()) {
    if (field !== path[depth] || reader.wireType !== LENGTH_DELIMITED) reader.skip();
    else if (depth === path.length - 1) found = reader.string();
    else found = readStringAt(reader, path, depth + 1) || found;
  }
  reader.leave(outer);
  return found;
}

function readAttributes(reader: WireReader, fields: Fields): void {
  const outer = reader.enter();
  for (let field = reader.next(); field !== 0; field = reader.next()) {
    if (reader.wireType !== LENGTH_DELIMITED) reader.skip();
    else if (field === ATTRIBUTES_REQUEST) {
      const request = reader.enter();
      for (let inner = reader.next(); inner !== 0; inner = reader.next()) {
        if (inner === REQUEST_HTTP && reader.wireType === LENGTH_DELIMITED)
          readHttp(reader, fields);
        else reader.skip();
      }
      reader.leave(request);
    } else if (field === ATTRIBUTES_CONTEXT_EXTENSIONS) {
      const [key, value] = readEntry(reader);
      fields.contextExtensions[key] = value;
    } else if (field === ATTRIBUTES_SOURCE) {
      const address = readStringAt(reader, SOURCE_ADDRESS_PATH);
      if (address !== "") fields.sourceAddress = address;
    } else reader.skip();
  }
  reader.leave(outer);
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
  const fields: Fields = {
    id: "",
    method: "",
    path: "",
    headers: new Map(),
    body: "",
    rawBody: undefined,
    contextExtensions: {},
    sourceAddress: "",
  };
  const reader = new WireReader(wire, 0, wire.length);
  for (let field = reader.next(); field !== 0; field = reader.next()) {
    if (field === CHECK_REQUEST_ATTRIBUTES && reader.wireType === LENGTH_DELIMITED)
      readAttributes(reader, fields);
    else reader.skip();
  }
  const { headers } = fields;
  const [path, query] = splitQuery(fields.path || (headers.get(":path") ?? ""));
  const body =
    fields.rawBody !== undefined && fields.rawBody.length > 0
      ? fields.rawBody
      : fields.body.length > 0
        ? Buffer.from(fields.body, "utf8")
        : undefined;
  return {
    method: fields.method || (headers.get(":method") ?? ""),
    path,
    query,
    headers,
    body,
    bodyTruncated: headers.get(PARTIAL_BODY_HEADER)?.trim().toLowerCase() === "true",
    contextExtensions: fields.contextExtensions,
    requestId: headers.get("x-request-id") ?? fields.id,
    sourceAddress: fields.sourceAddress,
  };
}
