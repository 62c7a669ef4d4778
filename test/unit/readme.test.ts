/**
 * The README's error and configuration tables are kept in step with the code: the error
 * tables must list exactly the catalogues' types (denials, provider errors) with their
 * status, gRPC code (denials), message and when-text, and the configuration table exactly the variables the config schema knows.
 */
import { readFileSync } from "node:fs";
import path from "node:path";
import test from "ava";
import { USAGE } from "../../server/cli/usage.js";
import { DENIAL_TYPES, PROVIDER_ERROR_TYPES } from "../../server/errors.js";
import { PROJECT_ROOT, readSchema } from "../../server/paths.js";

const readme = readFileSync(path.join(PROJECT_ROOT, "README.md"), "utf8");

/** Rows of the first markdown table after a heading. */
function tableAfter(heading: string): string[][] {
  const start = readme.indexOf(`\n${heading}\n`);
  if (start === -1) throw new Error(`README has no "${heading}" section`);
  const lines = readme.slice(start).split("\n");
  const first = lines.findIndex((line) => line.startsWith("|"));
  const rows: string[][] = [];
  for (const line of lines.slice(first + 2)) {
    if (!line.startsWith("|")) break;
    rows.push(
      line
        .slice(1, -1)
        .split(" | ")
        .map((cell) => cell.trim().replace(/^`|`$/g, "")),
    );
  }
  return rows;
}

test("the README's error table is the catalogue", (t) => {
  const expected = Object.entries(DENIAL_TYPES).map(([type, spec]) => [
    type,
    String(spec.httpStatus),
    String(spec.grpcCode),
    spec.message,
    spec.when,
  ]);
  t.deepEqual(tableAfter("## Errors"), expected);
});

test("the README's provider error table is the provider error catalogue", (t) => {
  const expected = Object.entries(PROVIDER_ERROR_TYPES).map(([type, spec]) => [
    type,
    String(spec.httpStatus),
    spec.message,
    spec.when,
  ]);
  t.deepEqual(tableAfter("### Provider errors"), expected);
});

test("the README's configuration table lists exactly the known variables", (t) => {
  const known = Object.keys(
    (readSchema("config.schema.json") as { properties: object }).properties,
  ).sort();
  const documented = tableAfter("## Configuration")
    .map((row) => row[0] ?? "")
    .sort();
  t.deepEqual(documented, known);
});

test("every CLI command in the usage text is in the README's CLI table", (t) => {
  const commands = new Set<string>();
  for (const line of USAGE.split("\n")) {
    const match = /^ {2}((?:keystore )?[a-z-]+)(?= {2}| [[<(-]|$)/.exec(line);
    if (match?.[1]) commands.add(match[1]);
  }
  t.true(commands.size >= 13, [...commands].join(", "));
  const documented = tableAfter("## CLI").map((row) => row[0] ?? "");
  for (const command of commands) {
    t.true(
      documented.some((cell) => cell.includes(`keygate ${command}`)),
      `keygate ${command} is documented`,
    );
  }
});

test("the README shows the commands a newcomer runs", (t) => {
  for (const command of [
    "npm ci",
    "npm start",
    "npm test",
    "npm run install-envoy",
    "npm run stack",
    "docker compose up",
  ]) {
    t.true(readme.includes(command), command);
  }
});
