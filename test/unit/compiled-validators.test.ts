import { cpSync, mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import test from "ava";
import { compiledValidator, PROJECT_ROOT } from "../../server/paths.js";

/** A package root holding a copy of the schemas and of what `npm run build` compiled. */
function copiedRoot(t: { teardown(fn: () => void): void }, withValidators = true): string {
  const root = mkdtempSync(path.join(tmpdir(), "keygate-validators-"));
  t.teardown(() => rmSync(root, { recursive: true, force: true }));
  cpSync(path.join(PROJECT_ROOT, "schemas"), path.join(root, "schemas"), { recursive: true });
  // The compiled code requires two of ajv's runtime helpers.
  symlinkSync(path.join(PROJECT_ROOT, "node_modules"), path.join(root, "node_modules"));
  if (withValidators) {
    mkdirSync(path.join(root, "dist"));
    cpSync(path.join(PROJECT_ROOT, "dist", "validators"), path.join(root, "dist", "validators"), {
      recursive: true,
    });
  }
  return root;
}

test("the compiled keystore validator checks what the schema says", (t) => {
  const validate = compiledValidator<unknown>("keystore");
  t.true(validate({ version: 1, clients: [{ id: "a", tokens: [] }] }));
  t.false(validate({ version: 2, clients: [{ id: "A b", tokens: [] }] }));
  // Every error, each with the schema that words it (allErrors, verbose).
  const messages = (validate.errors ?? []).map((error) => error.parentSchema?.errorMessage);
  t.true(messages.includes("must be 1 (the only keystore format this keygate reads)"));
  t.is(validate.errors?.length, 2);
});

test("a validator whose schema changed since the build is refused, not used", (t) => {
  const root = copiedRoot(t);
  t.notThrows(() => compiledValidator("config", root));
  writeFileSync(path.join(root, "schemas", "config.schema.json"), '{"type": "object"}');
  t.throws(() => compiledValidator("config", root), {
    message: /config\.schema\.json changed since .* was compiled: run npm run build/,
  });
});

test("a missing validator says to build", (t) => {
  const root = copiedRoot(t, false);
  t.throws(() => compiledValidator("keystore", root), {
    message: /validators\/keystore\.cjs is missing: run npm run build/,
  });
});
