/**
 * Where keygate's shipped files live, whether it runs from source (tsx) or from dist/.
 */
import { existsSync, readFileSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

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
