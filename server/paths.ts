/**
 * Where keygate's shipped files live, whether it runs from source (tsx) or from dist/.
 */
import { createHash } from "node:crypto";
import { existsSync, readFileSync } from "node:fs";
import { createRequire } from "node:module";
import path from "node:path";
import { fileURLToPath } from "node:url";
import type { ValidateFunction } from "ajv";

function findProjectRoot(start: string): string {
  let dir = start;
  while (!existsSync(path.join(dir, "package.json")) || !existsSync(path.join(dir, "schemas"))) {
    const parent = path.dirname(dir);
    if (parent === dir) throw new Error(`keygate: cannot find the package root above ${start}`);
    dir = parent;
  }
  return dir;
}

/** The package root: the folder holding package.json and schemas/. */
export const PROJECT_ROOT = findProjectRoot(path.dirname(fileURLToPath(import.meta.url)));

/** Reads and parses one of the JSON Schemas shipped in schemas/. */
export function readSchema(name: string): Record<string, unknown> {
  return JSON.parse(readFileSync(path.join(PROJECT_ROOT, "schemas", name), "utf8")) as Record<
    string,
    unknown
  >;
}

/**
 * The validator `npm run build` compiled from schemas/<name>.schema.json
 * (scripts/compile-validators.mjs): no ajv import or schema compile at run time.
 * @throws Error when it is missing, or its schema has changed since (run npm run build).
 */
export function compiledValidator<T>(
  name: "keystore" | "config",
  root: string = PROJECT_ROOT,
): ValidateFunction<T> {
  const schema = `schemas/${name}.schema.json`;
  const file = path.join(root, "dist", "validators", `${name}.cjs`);
  if (!existsSync(file)) throw new Error(`keygate: ${file} is missing: run npm run build`);
  const compiled = createRequire(import.meta.url)(file) as {
    readonly default: ValidateFunction<T>;
    readonly schemaSha256: string;
  };
  const text = readFileSync(path.join(root, schema), "utf8");
  if (createHash("sha256").update(text).digest("hex") !== compiled.schemaSha256)
    throw new Error(`keygate: ${schema} changed since ${file} was compiled: run npm run build`);
  return compiled.default;
}
