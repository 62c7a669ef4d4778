/**
 * The JSON Schema's errors as operators read them: one message per value, the most
 * telling keyword first, in the schema's own words (errorMessage, patternErrorMessage)
 * where it has them, each positioned by the load's Locator.
 */
import type { ErrorObject } from "ajv";
import type { Anchor, Locator } from "./load.js";
import type { KeystoreIssue } from "./model.js";
import type { Segment } from "./read-yaml.js";

const TYPE_WORDS: Readonly<Record<string, string>> = {
  object: "a mapping",
  array: "a list",
  string: "a string",
  boolean: "true or false",
  integer: "an integer",
  number: "a number",
};
/** When several keywords fail on one value, the first in this order says the most. */
const KEYWORD_RANK: Readonly<Record<string, number>> = {
  type: 0,
  const: 1,
  enum: 1,
  minLength: 2,
  minItems: 2,
  pattern: 3,
  format: 3,
};
const MERGE_KEY = "<<";
const MERGE_KEY_MESSAGE =
  "merge keys (<<) are not allowed: keystore.yaml is data, write each field out in full";

/** One located issue per value the schema rejected, from ajv's errors (allErrors, verbose). */
export function schemaIssues(errors: readonly ErrorObject[], locator: Locator): KeystoreIssue[] {
  const ranked = [...errors].sort(
    (a, b) => (KEYWORD_RANK[a.keyword] ?? 9) - (KEYWORD_RANK[b.keyword] ?? 9),
  );
  // One message per value: an empty upstream key fails minLength and pattern alike.
  const byValue = new Map<string, KeystoreIssue>();
  for (const error of ranked) {
    const { path, message, anchor } = describeSchemaError(error, locator);
    const key = JSON.stringify(path);
    if (!byValue.has(key)) byValue.set(key, locator.issue(path, message, anchor));
  }
  return [...byValue.values()];
}

interface DescribedError {
  /** The value the message is about. */
  readonly path: readonly Segment[];
  /** Where the operator should look when that is not the value itself. */
  readonly anchor: Anchor;
  readonly message: string;
}

function describeSchemaError(error: ErrorObject, locator: Locator): DescribedError {
  const at = pointerSegments(error.instancePath);
  const parent = (error.parentSchema ?? {}) as Record<string, unknown>;
  if (error.keyword === "required") {
    // A missing field has no node: point at the mapping it is missing from.
    const path = [...at, String(error.params.missingProperty)];
    return { path, anchor: { path: at }, message: "is required" };
  }
  if (error.keyword === "additionalProperties") {
    const path = [...at, String(error.params.additionalProperty)];
    const known = Object.keys((parent.properties ?? {}) as object).join(", ");
    const message =
      error.params.additionalProperty === MERGE_KEY
        ? MERGE_KEY_MESSAGE
        : `unknown field (allowed: ${known})`;
    return { path, anchor: { atKey: true }, message };
  }
  return { path: at, anchor: {}, message: valueMessage(error, parent, locator.source(at)) };
}

/** `source` is the value as written, when it is a scalar. */
function valueMessage(
  error: ErrorObject,
  parent: Record<string, unknown>,
  source: string | undefined,
): string {
  if (typeof parent.errorMessage === "string") return parent.errorMessage;
  if (error.keyword === "pattern" && typeof parent.patternErrorMessage === "string") {
    return parent.patternErrorMessage;
  }
  const params = error.params as Record<string, unknown>;
  switch (error.keyword) {
    case "type":
      return typeMessage(String(params.type), error.data, source);
    case "const":
      return `must be ${JSON.stringify(params.allowedValue)}`;
    case "enum":
      return `must be one of: ${(params.allowedValues as unknown[]).map(String).join(", ")}`;
    case "minLength":
      return "must not be empty";
    case "minItems":
      return `must list at least ${String(params.limit)} item(s)`;
    default:
      return error.message ?? "is invalid";
  }
}

function typeMessage(type: string, data: unknown, source: string | undefined): string {
  const expected = TYPE_WORDS[type] ?? type;
  if (data === null) return `is empty; expected ${expected}`;
  // YAML reads `id: 123` or `disabled: True` as a number or boolean: say how to keep it a
  // string, quoting what was written (a 64-digit digest read as a number prints as 1.1e+63).
  if (type === "string" && (typeof data === "number" || typeof data === "boolean")) {
    return `must be a string; put it in quotes ("${source ?? String(data)}")`;
  }
  return `must be ${expected}`;
}

/** JSON Pointer (`/clients/2/id`) → segments; digit-only segments index lists. */
function pointerSegments(pointer: string): Segment[] {
  if (pointer === "") return [];
  return pointer
    .slice(1)
    .split("/")
    .map((raw) => raw.replace(/~1/g, "/").replace(/~0/g, "~"))
    .map((segment) => (/^(0|[1-9][0-9]*)$/.test(segment) ? Number(segment) : segment));
}
