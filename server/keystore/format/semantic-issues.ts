/**
 * The keystore's semantic checks, the ones its JSON Schema cannot express, and the
 * reading of an expiry (epochMs) that they share with the conversion to the model.
 */
import { ENC_PATTERN, ENC_PREFIX } from "../../crypto/aes-gcm.js";
import { digestPrefix } from "../../crypto/token-hash.js";
import { shortened } from "../../shown-text.js";
import { clientName, showableId } from "./client-id.js";
import type { LoadOptions, Locator } from "./load.js";
import type { KeystoreIssue } from "./model.js";
import type { Segment } from "./read-yaml.js";
import { envNameProblem } from "./upstream-key-rules.js";

const LOOSE_DIGEST = /^[0-9a-fA-F]{64}$/;
const BASE64_DIGITS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
/** iv (12) + GCM tag (16) + at least one byte of key: anything shorter cannot be an upstream key. */
const MIN_SEALED_BYTES = 12 + 16 + 1;
/** An `env:` reference the schema accepts; other values are the schema's to report. */
const ENV_REFERENCE = /^env:([A-Za-z_][A-Za-z0-9_]*)$/;
const RFC3339 =
  /^(\d{4})-(\d{2})-(\d{2})[Tt\s](\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?(?:[Zz]|([+-])(\d{2})(?::?(\d{2}))?)$/;
const EXPIRES_MESSAGE = "must be an RFC 3339 date-time with a time zone, e.g. 2026-12-01T00:00:00Z";
const NO_CLIENTS_MESSAGE =
  "is empty: in enforce mode an empty keystore would deny every request; add a client " +
  "(keygate keystore add <id>) or set KEYGATE_MODE to recognize, dry-run or off";

/**
 * What the schema cannot express: unique ids and digests, real `enc:` payloads, `env:`
 * names that may hold a key, expiries the conversion reads as written, and clients in
 * enforce mode. The data is read leniently, so these run even when the schema failed.
 * One pass with plain loops: it runs on every valid 100 000-client file.
 */
export function semanticIssues(
  data: unknown,
  options: LoadOptions,
  locator: Locator,
): KeystoreIssue[] {
  const root = asRecord(data);
  const clients: readonly unknown[] = Array.isArray(root?.clients) ? root.clients : [];
  const issues: KeystoreIssue[] = [];
  const problem = (message: string | undefined, ...path: Segment[]) => {
    if (message !== undefined) issues.push(locator.issue(path, message));
  };
  if (options.requireClients && Array.isArray(root?.clients) && clients.length === 0) {
    problem(NO_CLIENTS_MESSAGE, "clients");
  }
  const defaultKey = asRecord(root?.defaults)?.upstream_key;
  problem(malformedReference(defaultKey, options), "defaults", "upstream_key");
  const firstUse = new Map<string, number>();
  const owners = new Map<string, TokenAt>();
  for (let index = 0; index < clients.length; index++) {
    const client = asRecord(clients[index]);
    problem(duplicateId(idOf(client), index, firstUse, locator), "clients", index, "id");
    problem(malformedReference(client?.upstream_key, options), "clients", index, "upstream_key");
    const tokens: readonly unknown[] = Array.isArray(client?.tokens) ? client.tokens : [];
    for (let token = 0; token < tokens.length; token++) {
      const { sha256, expires } = asRecord(tokens[token]) ?? {};
      if (typeof expires === "string" && !Number.isFinite(epochMs(expires))) {
        problem(EXPIRES_MESSAGE, "clients", index, "tokens", token, "expires");
      }
      const shared = sharedDigest(sha256, { client: index, token }, owners, clients);
      problem(shared, "clients", index, "tokens", token, "sha256");
    }
  }
  return issues;
}

/** Where a token is: its client's index and its own in that client's list. */
interface TokenAt {
  readonly client: number;
  readonly token: number;
}

/** The problem with `id` when an earlier client has it; records it when none has. */
function duplicateId(
  id: string | undefined,
  index: number,
  firstUse: Map<string, number>,
  locator: Locator,
): string | undefined {
  if (id === undefined) return undefined;
  const earlier = firstUse.get(id);
  if (earlier === undefined) {
    firstUse.set(id, index);
    return undefined;
  }
  const line = locator.line(["clients", earlier, "id"]);
  const shown = showableId(id) ? ` ${JSON.stringify(id)}` : "";
  return `duplicate client id${shown} (already used by clients[${earlier}] at line ${line}); ids must be unique`;
}

/** The problem with a digest (any case) when an earlier token has it; records it when none has. */
function sharedDigest(
  sha256: unknown,
  at: TokenAt,
  owners: Map<string, TokenAt>,
  clients: readonly unknown[],
): string | undefined {
  if (typeof sha256 !== "string" || !LOOSE_DIGEST.test(sha256)) return undefined;
  const digest = sha256.toLowerCase();
  const owner = owners.get(digest);
  if (owner === undefined) {
    owners.set(digest, at);
    return undefined;
  }
  const name = (index: number) => clientName(idOf(clients[index]), index);
  const where = `clients[${owner.client}].tokens[${owner.token}]`;
  return owner.client === at.client
    ? `digest ${digestPrefix(digest)}… is listed twice for client ${name(at.client)} (also ${where})`
    : `digest ${digestPrefix(digest)}… of client ${name(at.client)} already belongs to client ` +
        `${name(owner.client)} (${where}); a token may belong to one client only`;
}

function asRecord(value: unknown): Record<string, unknown> | undefined {
  return typeof value === "object" && value !== null && !Array.isArray(value)
    ? (value as Record<string, unknown>)
    : undefined;
}

function idOf(client: unknown): string | undefined {
  const id = asRecord(client)?.id;
  return typeof id === "string" ? id : undefined;
}

/** Base64 as Buffer writes it (whole quanta, padded, no stray bits), long enough for AES-GCM. */
function sealedPayloadProblem(payload: string): string | undefined {
  const padding = payload.endsWith("==") ? 2 : payload.endsWith("=") ? 1 : 0;
  const last = BASE64_DIGITS.indexOf(payload.charAt(payload.length - 1 - padding));
  const strayBits = last & (padding === 2 ? 0x0f : padding === 1 ? 0x03 : 0);
  if (last === -1 || strayBits !== 0 || payload.length % 4 !== 0) {
    return "the enc: value's payload is not valid base64 (was it truncated or re-wrapped?)";
  }
  if ((payload.length / 4) * 3 - padding < MIN_SEALED_BYTES) {
    return "the enc: value is too short to hold an AES-GCM ciphertext (was it truncated?)";
  }
  return undefined;
}

/**
 * What the schema's pattern cannot say about an upstream key reference: an `enc:` payload
 * must be real base64 and long enough; an `env:` name must not be keygate's own setting
 * nor outside KEYGATE_UPSTREAM_ENV_PREFIX (an error, not a warning: the file says to send
 * a secret it was never meant to send). Other values are the schema's to report.
 */
function malformedReference(value: unknown, options: LoadOptions): string | undefined {
  if (typeof value !== "string") return undefined;
  if (value.startsWith(ENC_PREFIX)) {
    // The structure first, without a regular expression (this runs for every client); a
    // value that does not have the enc: shape at all is the schema's to report.
    const problem = sealedPayloadProblem(value.slice(value.lastIndexOf(":") + 1));
    return problem !== undefined && ENC_PATTERN.test(value) ? problem : undefined;
  }
  const name = ENV_REFERENCE.exec(value)?.[1];
  const problem =
    name === undefined ? undefined : envNameProblem(name, options.upstreamEnvPrefix ?? null);
  return problem === undefined ? undefined : `env:${shortened(name ?? "")} ${problem}`;
}

/** Epoch milliseconds of an RFC 3339 date-time; NaN when it is not one. Leap seconds roll over. */
export function epochMs(text: string): number {
  const match = RFC3339.exec(text);
  if (match === null) return Number.NaN;
  const part = (index: number): number => Number(match[index] ?? 0);
  const millis = Math.floor(Number(`0.${match[7] ?? "0"}`) * 1000);
  const wallClock = Date.UTC(part(1), part(2) - 1, part(3), part(4), part(5), part(6), millis);
  const offsetMinutes = (match[8] === "-" ? -1 : 1) * (part(9) * 60 + part(10));
  return wallClock - offsetMinutes * 60_000;
}
