/**
 * Argument parsing shared by the CLI's commands. A malformed invocation (unknown command
 * or flag, missing or extra argument, flags that exclude each other) is a UsageError:
 * exit 2 with the usage text. A well-formed invocation whose values are wrong is a
 * plain failure (exit 1, one line), like any other.
 */
import { parseArgs } from "node:util";
import { quoted, scrubbed } from "../shown-text.js";

/** A malformed invocation: printed with the usage text, exit 2. */
export class UsageError extends Error {}

/** A failure with lines to show under its one-line message (e.g. keystore issues); exit 1. */
export class DetailedError extends Error {
  readonly details: readonly string[];
  constructor(message: string, details: readonly string[]) {
    super(message);
    this.name = "DetailedError";
    this.details = details;
  }
}

export type OptionSpec = Record<string, { type: "string" | "boolean" }>;

export interface Parsed {
  readonly values: Readonly<Record<string, string | boolean | undefined>>;
  readonly positionals: readonly string[];
}

/**
 * Parses `args` strictly against `options`, with the named positionals (a name ending in
 * `?` may be left out).
 * @throws UsageError for an unknown flag, a missing value, or a missing or extra argument.
 */
export function parseCommand(
  command: string,
  args: readonly string[],
  options: OptionSpec,
  positionals: readonly string[] = [],
): Parsed {
  let parsed: ReturnType<typeof parseArgs>;
  try {
    parsed = parseArgs({ args: [...args], options, allowPositionals: true, strict: true });
  } catch (error) {
    // parseArgs quotes what it was given; a secret pasted into argv must not be echoed.
    throw new UsageError(`${command}: ${scrubbed((error as Error).message)}`);
  }
  const missing = positionals[parsed.positionals.length];
  if (missing !== undefined && !missing.endsWith("?"))
    throw new UsageError(`${command} needs <${missing}>`);
  const extra = parsed.positionals[positionals.length];
  if (extra !== undefined) throw new UsageError(`${command}: unexpected argument ${quoted(extra)}`);
  return {
    values: parsed.values as Record<string, string | boolean | undefined>,
    positionals: parsed.positionals,
  };
}

/** A string option's value, or undefined. */
export function stringValue(parsed: Parsed, name: string): string | undefined {
  const value = parsed.values[name];
  return typeof value === "string" ? value : undefined;
}

/** The keystore a command acts on: --keystore, then KEYGATE_KEYSTORE, then ./keystore.yaml. */
export function keystorePath(parsed: Parsed, env: NodeJS.ProcessEnv): string {
  return stringValue(parsed, "keystore") ?? (env.KEYGATE_KEYSTORE || "./keystore.yaml");
}

/** Splits `/a,/b` into trimmed, non-empty items. @throws Error when nothing is left. */
export function listValue(flag: string, value: string): string[] {
  const items = value
    .split(",")
    .map((item) => item.trim())
    .filter((item) => item !== "");
  if (items.length === 0) throw new Error(`--${flag} needs at least one value (comma-separated)`);
  return items;
}

/** A line for the operator on stdout: only what a script captures (a token, a listing). */
export function out(text: string): void {
  process.stdout.write(text.endsWith("\n") ? text : `${text}\n`);
}

/** A message for the operator on stderr, so stdout stays machine-readable. */
export function note(text: string): void {
  process.stderr.write(`${text}\n`);
}
