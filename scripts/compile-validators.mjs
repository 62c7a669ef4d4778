/**
 * Compiles the JSON Schemas keygate validates at run time into standalone ajv validators,
 * dist/validators/<name>.cjs (part of `npm run build`). Importing ajv and compiling the
 * keystore schema took about 170 ms in every process that validated: each reload worker
 * (so every revocation after an idle spell), each `keygate keystore` command and the
 * server's start. A compiled validator loads in a few milliseconds and needs only two of
 * ajv's small runtime helpers. Each file records the hash of the schema it came from;
 * server/paths.ts refuses a validator whose schema has changed since.
 */
import { createHash } from "node:crypto";
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { Ajv } from "ajv";
import standaloneCode from "ajv/dist/standalone/index.js";
import addFormats from "ajv-formats";

const ROOT = path.dirname(path.dirname(fileURLToPath(import.meta.url)));
const OUT = path.join(ROOT, "dist", "validators");

/** Each validator's ajv set-up, as its schema's annotations need it. */
const VALIDATORS = {
  // Every error at once, each with its data and schema (verbose), for located issues worded by
  // the schema's errorMessage/patternErrorMessage (yaml-language-server shows them too).
  keystore: () => {
    const ajv = new Ajv({ allErrors: true, strict: true, verbose: true, code: { source: true } });
    ajv.addVocabulary(["errorMessage", "patternErrorMessage"]);
    addFormats.default(ajv, ["date-time"]);
    return ajv;
  },
  // The first error only; defaults filled in and numbers read from the environment's strings.
  config: () => {
    const ajv = new Ajv({
      allErrors: false,
      strict: true,
      useDefaults: true,
      coerceTypes: true,
      verbose: true,
      code: { source: true },
    });
    ajv.addKeyword({ keyword: "errorMessage", schemaType: "string" });
    return ajv;
  },
};

mkdirSync(OUT, { recursive: true });
for (const [name, setUp] of Object.entries(VALIDATORS)) {
  const text = readFileSync(path.join(ROOT, "schemas", `${name}.schema.json`), "utf8");
  const ajv = setUp();
  const code = standaloneCode.default(ajv, ajv.compile(JSON.parse(text)));
  const schemaSha256 = createHash("sha256").update(text).digest("hex");
  writeFileSync(
    path.join(OUT, `${name}.cjs`),
    `${code}\nmodule.exports.schemaSha256 = ${JSON.stringify(schemaSha256)};\n`,
  );
}
