/**
 * The starter keystore that `keygate keystore init` and a first `npm start` write, so a
 * newcomer sees keygate work at once: one client `demo` whose token is returned to be
 * printed once. Only the token's digest reaches the file, and the comments show where
 * everything else goes.
 */
import { mkdirSync, writeFileSync } from "node:fs";
import path from "node:path";
import { mintToken } from "../../crypto/token-format.js";
import { DIGEST_PATTERN, hashToken } from "../../crypto/token-hash.js";
import { PROJECT_ROOT } from "../../paths.js";

/** The modeline target when the keystore sits at the project root, as in DESIGN §4. */
const DEFAULT_SCHEMA_REF = "./schemas/keystore.schema.json";
const SCHEMA_FILE = path.join(PROJECT_ROOT, "schemas", "keystore.schema.json");
const KEYSTORE_MODE = 0o600;
const DIRECTORY_MODE = 0o700;

/**
 * The text of a starter keystore whose one client `demo` holds `digest`.
 * @param schemaRef where editors find the JSON Schema, relative to the keystore file.
 * @throws Error when `digest` is not a lowercase SHA-256 digest (a raw token must never be written).
 */
export function starterKeystoreText(
  digest: string,
  schemaRef: string = DEFAULT_SCHEMA_REF,
): string {
  if (!DIGEST_PATTERN.test(digest))
    throw new Error("starter keystore: expected a lowercase SHA-256 digest");
  return `# yaml-language-server: $schema=${schemaRef}
#
# keygate keystore (format version 1). keygate reloads this file when it is saved; an
# invalid edit is reported with its line and column and never replaces the last good one.
# Tokens appear only as SHA-256 digests: \`keygate hash\` prints one from stdin, and
# \`keygate keystore add <id>\` mints a client's token and adds its digest here.
version: 1

# defaults:
#   upstream_key: env:ANTHROPIC_API_KEY   # provider key for clients without their own

clients:
  - id: demo
    name: Demo client written by keygate
    tokens:
      - sha256: ${digest}
        # expires: 2026-12-01T00:00:00Z   # optional, RFC 3339
    # upstream_key: env:ANTHROPIC_API_KEY  # or enc:v1:<kid>:<base64> (keygate keystore set-upstream-key demo);
    #                                      # absent: defaults.upstream_key, else the upstream's own key
    # routes: [/v1/]                       # optional path-prefix allow-list
    # models: [claude-sonnet-*]            # optional allow-list for the body's "model" (* globs)
    # disabled: false
    # kind: client                         # internal: allowed through without a key swap
    # budget: {tokens: 100000, per: day}   # tokens per UTC day or month, then 429 until it resets
`;
}

/**
 * Writes a starter keystore with a freshly minted token (mode 0600, directory created).
 * @returns the token, to be printed once: only its digest is in the file.
 * @throws Error when the file already exists (it is never overwritten) or cannot be written.
 */
export function writeStarterKeystore(file: string): { token: string } {
  const directory = path.dirname(path.resolve(file));
  mkdirSync(directory, { recursive: true, mode: DIRECTORY_MODE });
  const token = mintToken();
  const text = starterKeystoreText(hashToken(token), schemaRefFrom(directory));
  try {
    // "wx" fails if the file exists, atomically: no check-then-write race with an operator's file.
    writeFileSync(file, text, { flag: "wx", mode: KEYSTORE_MODE });
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "EEXIST") {
      throw new Error(
        `${file} already exists; keygate never overwrites a keystore (edit it, or move it away first)`,
      );
    }
    throw error;
  }
  return { token };
}

/** The schema's path relative to the keystore's directory, as yaml-language-server resolves it. */
function schemaRefFrom(directory: string): string {
  const relative = path.relative(directory, SCHEMA_FILE).split(path.sep).join("/");
  return relative.startsWith("../") ? relative : `./${relative}`;
}
