#!/usr/bin/env node
/**
 * The `keygate` command line. Usage errors exit 2 with the usage text; failures exit 1
 * with one clear line; secrets are read from stdin only.
 */
import { parseArgs } from "node:util";
import { ConfigError, loadConfig } from "../config.js";
import { encryptSecret, generateMasterKey } from "../crypto/aes-gcm.js";
import { hashToken } from "../crypto/token-hash.js";
import { readKeystoreFile } from "../keystore/load.js";
import { writeStarterKeystore } from "../keystore/starter.js";
import { formatIssue, KeystoreError } from "../keystore/types.js";
import { readSecretFromStdin } from "./read-stdin.js";
import { serve } from "./serve.js";

export const USAGE = `usage: keygate <command> [options]

  serve                              run the server (what npm start does)
  keystore init                      write a starter keystore.yaml (mode 0600); prints the demo token
  keystore check                     validate keystore.yaml; prints file:line:column: message per problem
  hash                               stdin token -> lowercase hex SHA-256
  keygen [--kid k1]                  print a new master key as kid:base64
  encrypt --client <id> [--kid K]    stdin secret -> enc:v1:... bound to that client id

  --keystore FILE                    keystore path (default: $KEYGATE_KEYSTORE or ./keystore.yaml)
`;

/** A usage problem: printed with the usage text, exit 2. */
class UsageError extends Error {}

type Options = Record<string, { type: "string" | "boolean"; short?: string }>;

function parse(args: string[], options: Options, positionals = 0) {
  let parsed: ReturnType<typeof parseArgs>;
  try {
    parsed = parseArgs({ args, options, allowPositionals: positionals > 0, strict: true });
  } catch (error) {
    throw new UsageError((error as Error).message);
  }
  if (parsed.positionals.length > positionals)
    throw new UsageError(`unexpected argument "${parsed.positionals[positionals]}"`);
  return parsed;
}

function keystorePath(value: unknown, env: NodeJS.ProcessEnv): string {
  return typeof value === "string" ? value : (env.KEYGATE_KEYSTORE ?? "./keystore.yaml");
}

function out(line: string): void {
  process.stdout.write(`${line}\n`);
}

async function keystoreCommand(args: string[], env: NodeJS.ProcessEnv): Promise<number> {
  const [sub, ...rest] = args;
  switch (sub) {
    case "init": {
      const { values } = parse(rest, { keystore: { type: "string" } });
      const path = keystorePath(values.keystore, env);
      const { token } = writeStarterKeystore(path);
      process.stderr.write(`wrote ${path} with client "demo"; its token (shown once):\n`);
      out(token);
      return 0;
    }
    case "check": {
      const { values } = parse(rest, { keystore: { type: "string" } });
      const path = keystorePath(values.keystore, env);
      const config = loadConfig(env);
      try {
        const loaded = readKeystoreFile(path, {
          masterKeys: config.masterKeys,
          env,
          requireClients: config.mode === "enforce",
        });
        for (const warning of loaded.warnings)
          process.stderr.write(`${formatIssue(warning)} (warning)\n`);
        out(`${path}: ok, ${loaded.keystore.clients.length} clients`);
        return 0;
      } catch (error) {
        if (!(error instanceof KeystoreError)) throw error;
        for (const issue of error.issues) out(formatIssue(issue));
        return 1;
      }
    }
    default:
      throw new UsageError(
        sub === undefined ? "keystore needs a subcommand" : `unknown keystore command "${sub}"`,
      );
  }
}

/** Runs one CLI invocation and returns the exit code. */
export async function run(argv: string[], env: NodeJS.ProcessEnv): Promise<number> {
  const [command, ...rest] = argv;
  try {
    switch (command) {
      case "serve":
        parse(rest, {});
        return await serve(env);
      case "keystore":
        return await keystoreCommand(rest, env);
      case "hash":
        parse(rest, {});
        out(hashToken(await readSecretFromStdin("the token")));
        return 0;
      case "keygen": {
        const { values } = parse(rest, { kid: { type: "string" } });
        out(generateMasterKey(typeof values.kid === "string" ? values.kid : "k1"));
        return 0;
      }
      case "encrypt": {
        const { values } = parse(rest, { client: { type: "string" }, kid: { type: "string" } });
        if (typeof values.client !== "string") throw new UsageError("encrypt needs --client <id>");
        const keys = loadConfig(env).masterKeys;
        const kid = typeof values.kid === "string" ? values.kid : [...keys.keys()].at(-1);
        const key = kid === undefined ? undefined : keys.get(kid);
        if (kid === undefined || key === undefined) {
          throw new Error(
            kid === undefined
              ? "no master key: set KEYGATE_MASTER_KEY or KEYGATE_MASTER_KEY_FILE"
              : `master key "${kid}" is not loaded`,
          );
        }
        out(encryptSecret(await readSecretFromStdin("the secret"), values.client, kid, key));
        return 0;
      }
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
    if (error instanceof UsageError) {
      process.stderr.write(`keygate: ${error.message}\n\n${USAGE}`);
      return 2;
    }
    const message =
      error instanceof ConfigError
        ? `configuration error: ${error.message}`
        : (error as Error).message;
    process.stderr.write(`keygate: ${message}\n`);
    return 1;
  }
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
