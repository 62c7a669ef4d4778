/**
 * Generated keystores for the benchmark: N clients with one minted token each and their
 * own AES-GCM-sealed upstream key (the heavy, realistic case: keygate holds a provider
 * key per client), every tenth restricted to a model glob. Written as keystore.yaml in
 * a temp dir; the raw tokens and keys stay in memory to build requests and expectations.
 */
import { randomBytes } from "node:crypto";
import { mkdtempSync, renameSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { encryptSecret } from "../server/crypto/aes-gcm.js";
import { mintToken } from "../server/crypto/token-format.js";
import { hashToken } from "../server/crypto/token-hash.js";

export const MASTER_KID = "k1";

export interface BenchClient {
  readonly id: string;
  readonly token: string;
  readonly digest: string;
  /** The upstream key in clear, as keygate must put it in the upstream header. */
  readonly upstreamKey: string;
}

export interface KeystoreFixture {
  readonly dir: string;
  readonly keystorePath: string;
  readonly dbPath: string;
  /** `k1:<base64>` for KEYGATE_MASTER_KEY. */
  readonly masterKeySpec: string;
  readonly clients: readonly BenchClient[];
  readonly bytes: number;
  /** The current file text (edits replace it). */
  text: string;
}

function clientId(index: number): string {
  return `client-${String(index).padStart(6, "0")}`;
}

/** Writes a keystore with `count` clients to a fresh temp dir. */
export function generateKeystore(count: number, label: string): KeystoreFixture {
  const dir = mkdtempSync(path.join(tmpdir(), `keygate-bench-${label}-`));
  const masterKey = randomBytes(32);
  const clients: BenchClient[] = [];
  const lines = [
    "# yaml-language-server: $schema=./schemas/keystore.schema.json",
    `# keygate benchmark keystore: ${count} clients, generated`,
    "version: 1",
    "clients:",
  ];
  for (let index = 0; index < count; index++) {
    const id = clientId(index);
    const token = mintToken();
    const digest = hashToken(token);
    const upstreamKey = `sk-ant-api03-${randomBytes(60).toString("base64url")}`;
    clients.push({ id, token, digest, upstreamKey });
    lines.push(
      `  - id: ${id}`,
      `    name: Benchmark client ${index}`,
      "    tokens:",
      `      - sha256: ${digest}`,
      `    upstream_key: ${encryptSecret(upstreamKey, id, MASTER_KID, masterKey)}`,
    );
    if (index % 10 === 9) lines.push("    models: [claude-sonnet-*, claude-opus-*]");
  }
  const text = `${lines.join("\n")}\n`;
  const keystorePath = path.join(dir, "keystore.yaml");
  writeFileSync(keystorePath, text, { mode: 0o600 });
  return {
    dir,
    keystorePath,
    dbPath: path.join(dir, "data", "keystore.db"),
    masterKeySpec: `${MASTER_KID}:${masterKey.toString("base64")}`,
    clients,
    bytes: Buffer.byteLength(text),
    text,
  };
}

/** Saves new text the way editors and `keygate keystore` do: temp file, then rename over. */
export function saveAtomically(fixture: KeystoreFixture, text: string): void {
  const temp = `${fixture.keystorePath}.bench-tmp`;
  writeFileSync(temp, text, { mode: 0o600 });
  renameSync(temp, fixture.keystorePath);
  fixture.text = text;
}

/**
 * A one-line edit that revokes a token: its digest line replaced by a new token's (a
 * rotation without grace). Returns the new text and the new token.
 * @throws Error when the digest is not in the text.
 */
export function withTokenRotated(
  text: string,
  digest: string,
): { readonly text: string; readonly token: string } {
  const line = `      - sha256: ${digest}\n`;
  if (!text.includes(line)) throw new Error("digest not found in keystore text");
  const token = mintToken();
  return { text: text.replace(line, `      - sha256: ${hashToken(token)}\n`), token };
}
