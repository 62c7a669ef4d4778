/**
 * What `keygate serve` loads stays in its heap for the server's whole life (an ES module
 * is never unloaded), so the server's static import graph must leave out what only other
 * commands or optional features need: the CLI editor and the yaml package, the usage
 * report, ioredis (loaded when KEYGATE_USAGE_REDIS_URL is set) and ajv (the validators
 * are compiled by npm run build). The reload worker is started from its own entry point
 * and is not part of this graph.
 */
import { readFileSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import test from "ava";

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
/** Static imports and re-exports that load code (`import type` is erased). */
const STATIC_IMPORT = /^(?:import|export)\s+(?!type\b)(?:[^"';]*?\sfrom\s+)?["']([^"']+)["']/gm;

/** Files and packages reachable through static imports from `entries` (paths from the repo root). */
function staticGraph(entries: readonly string[]): { files: Set<string>; packages: Set<string> } {
  const files = new Set<string>();
  const packages = new Set<string>();
  const pending = [...entries];
  for (let file = pending.pop(); file !== undefined; file = pending.pop()) {
    if (files.has(file)) continue;
    files.add(file);
    const source = readFileSync(path.join(ROOT, file), "utf8");
    for (const [, specifier] of source.matchAll(STATIC_IMPORT)) {
      if (specifier === undefined || specifier.startsWith("node:")) continue;
      if (!specifier.startsWith(".")) {
        packages.add(specifier.startsWith("@") ? specifier : (specifier.split("/")[0] ?? ""));
        continue;
      }
      const target = path.join(path.dirname(file), specifier).replace(/\.js$/, ".ts");
      pending.push(target);
    }
  }
  return { files, packages };
}

test("keygate serve loads neither the CLI editor, yaml, proper-lockfile, ioredis nor ajv", (t) => {
  const { files, packages } = staticGraph(["server/cli/main.ts", "server/cli/serve.ts"]);
  // The walk itself works: the Check path and its libraries are found.
  t.true(files.has("server/grpc/check-service.ts"));
  t.true(files.has("server/usage/budgets.ts"));
  t.true(packages.has("prom-client") && packages.has("better-sqlite3"));
  // ajv too: the schemas' validators are compiled by npm run build (server/paths.ts).
  for (const unwanted of ["yaml", "proper-lockfile", "ioredis", "js-yaml", "ajv", "ajv-formats"]) {
    t.false(packages.has(unwanted), `${unwanted} is in keygate serve's static import graph`);
  }
  const cliOnly = [...files].filter(
    (file) =>
      /^server\/cli\/(keystore-|usage-)/.test(file) ||
      (file.startsWith("server/keystore/edit/") && file !== "server/keystore/edit/edit-error.ts"),
  );
  t.deepEqual(cliOnly, []);
});
