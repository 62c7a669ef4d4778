/**
 * The client id rule, read from schemas/keystore.schema.json so that code checking an id
 * outside a keystore (the CLI's arguments, the loader's messages) cannot drift from the
 * schema that checks the file. The schema stays the one place the rule is written.
 */
import { looksSecret } from "../../crypto/secret-shapes.js";
import { readSchema } from "../../paths.js";

interface ClientIdRule {
  readonly pattern: RegExp;
  /** What a valid id looks like, as the schema says it: "must be 1-64 characters of …". */
  readonly message: string;
}

/** Looks up `keys` in turn; undefined as soon as one is missing or not an object. */
function field(value: unknown, ...keys: readonly string[]): unknown {
  let current = value;
  for (const key of keys) {
    if (typeof current !== "object" || current === null) return undefined;
    current = Object.getOwnPropertyDescriptor(current, key)?.value;
  }
  return current;
}

function readClientIdRule(): ClientIdRule {
  const id = field(readSchema("keystore.schema.json"), "definitions", "client", "properties", "id");
  const pattern = field(id, "pattern");
  const message = field(id, "patternErrorMessage");
  if (typeof pattern !== "string" || typeof message !== "string") {
    throw new Error("keystore.schema.json: definitions.client.properties.id has no pattern");
  }
  return { pattern: new RegExp(pattern, "u"), message };
}

const RULE = readClientIdRule();

/** The schema's message for an id that breaks the rule, e.g. "must be 1-64 characters of …". */
export const CLIENT_ID_MESSAGE = RULE.message;

/** Whether `id` is a client id the keystore schema accepts. */
export function isClientId(id: string): boolean {
  return RULE.pattern.test(id);
}

/** An id a message may print: a well-formed one (so short, with no control characters) not shaped like a secret. */
export function showableId(id: string): boolean {
  return isClientId(id) && !looksSecret(id);
}

/** A client as a message names it: its id, or its place in the list when the id may be a secret. */
export function clientName(id: string | undefined, index: number): string {
  return id !== undefined && showableId(id) ? JSON.stringify(id) : `clients[${index}]`;
}
