#!/usr/bin/env node
/**
 * The `keygate` command line. Usage errors exit 2 with the usage text; failures exit 1
 * with one clear line (and, for keystore problems, the issues under it); secrets are read
 * from stdin only, never argv.
 */
import { ConfigError, loadConfig } from "../config.js";
import { generateMasterKey } from "../crypto/aes-gcm.js";
import { hashToken } from "../crypto/token-hash.js";
import { DEFAULTS_AAD, KeystoreEditError } from "../keystore/keystore-editor.js";
import { DetailedError, out, parseCommand, stringValue, UsageError } from "./args.js";
import { keystoreCommand } from "./keystore-commands.js";
import { readSecretFromStdin } from "./read-stdin.js";
import { seal, sealingKey } from "./upstream-key-input.js";

export const USAGE = `usage: keygate <command> [options]

  serve                                  run the server (what npm start does)

  keystore init                          write a starter keystore.yaml (mode 0600); prints the demo token
  keystore add <id> [--name N] [--routes /a,/b] [--models m1,m2] [--expires T] [--internal]
               [--upstream-key-stdin [--kid K] | --upstream-key-env VAR]
                                         new client; prints only its new token
  keystore rotate <id> [--grace 24h] [--expires T]
                                         new token printed; old tokens expire after the grace
                                         (default 0: removed at once)
  keystore revoke <id> [--token SHA256-PREFIX]
                                         remove the client's tokens, or the one whose digest starts so
  keystore disable <id> | enable <id> | remove <id>
  keystore set-upstream-key (<id> | --defaults) [--kid K]
                                         stdin upstream key -> enc:v1:... under the newest master key
  keystore list [--json]                 clients, token counts and expiries, key kinds, last use; no secrets
  keystore check                         validate; prints file:line:column: message per problem
  keystore reencrypt --to KID            re-encrypt every enc: value under master key KID

  hash                                   stdin token -> lowercase hex SHA-256
  keygen [--kid k1]                      print a new master key as kid:base64
  encrypt (--client <id> | --defaults) [--kid K]
                                         stdin secret -> enc:v1:... bound to that client id

  Keystore commands take --keystore FILE (default: $KEYGATE_KEYSTORE, else ./keystore.yaml).
  T is an RFC 3339 time (2026-12-01T00:00:00Z) or a duration from now (90d); durations: 30m, 24h, 7d.
  Master keys come from KEYGATE_MASTER_KEY or KEYGATE_MASTER_KEY_FILE (kid:base64[,kid:base64]);
  the last one listed is the newest.
`;

async function encrypt(args: readonly string[], env: NodeJS.ProcessEnv): Promise<number> {
  const parsed = parseCommand("encrypt", args, {
    client: { type: "string" },
    defaults: { type: "boolean" },
    kid: { type: "string" },
  });
  const client = stringValue(parsed, "client");
  const forDefaults = parsed.values.defaults === true;
  if ((client === undefined) === !forDefaults) {
    throw new UsageError("encrypt needs --client <id> or --defaults (one of them)");
  }
  const sealing = sealingKey(loadConfig(env).masterKeys, stringValue(parsed, "kid"));
  out(seal(await readSecretFromStdin("secret"), client ?? DEFAULTS_AAD, sealing));
  return 0;
}

/** Runs one CLI invocation and returns the exit code. */
export async function run(argv: readonly string[], env: NodeJS.ProcessEnv): Promise<number> {
  const [command, ...rest] = argv;
  try {
    switch (command) {
      case "serve": {
        parseCommand("serve", rest, {});
        // Loaded only here: the other commands start faster without the gRPC stack.
        const { serve } = await import("./serve.js");
        return await serve(env);
      }
      case "keystore":
        return await keystoreCommand(rest, env);
      case "hash":
        parseCommand("hash", rest, {});
        out(hashToken(await readSecretFromStdin("token")));
        return 0;
      case "keygen": {
        const parsed = parseCommand("keygen", rest, { kid: { type: "string" } });
        out(generateMasterKey(stringValue(parsed, "kid") ?? "k1"));
        return 0;
      }
      case "encrypt":
        return await encrypt(rest, env);
      case "help":
      case "--help":
      case "-h":
        process.stdout.write(USAGE);
        return 0;
      default:
        throw new UsageError(
          command === undefined ? "no command given" : `unknown command "${command}"`,
        );
    }
  } catch (error) {
    return reportFailure(error);
  }
}

function reportFailure(error: unknown): number {
  if (error instanceof UsageError) {
    process.stderr.write(`keygate: ${error.message}\n\n${USAGE}`);
    return 2;
  }
  const message =
    error instanceof ConfigError
      ? `configuration error: ${error.message}`
      : (error as Error).message;
  process.stderr.write(`keygate: ${message}\n`);
  if (error instanceof KeystoreEditError || error instanceof DetailedError) {
    for (const line of error.details) process.stderr.write(`${line}\n`);
  }
  return 1;
}

run(process.argv.slice(2), process.env).then(
  (code) => {
    process.exitCode = code;
    // A stopped server has closed its sockets; do not let a stray handle keep the process up.
    setTimeout(() => process.exit(), 2000).unref();
  },
  (error: unknown) => {
    process.stderr.write(`keygate: unexpected error: ${(error as Error).stack ?? String(error)}\n`);
    process.exitCode = 1;
  },
);
