#!/usr/bin/env node
/**
 * The `keygate` command line. Usage errors exit 2 with the usage text; failures exit 1
 * with one clear line (and, for keystore problems, the issues under it); secrets are read
 * from stdin only, never argv.
 */
import { ConfigError, loadConfig } from "../config.js";
import { generateMasterKey } from "../crypto/aes-gcm.js";
import { hashToken } from "../crypto/token-hash.js";
import { KeystoreEditError } from "../keystore/edit/edit-error.js";
import { DEFAULTS_AAD } from "../keystore/format/model.js";
import { quoted } from "../shown-text.js";
import { DetailedError, out, parseCommand, stringValue, UsageError } from "./args.js";
import { readSecretFromStdin } from "./read-stdin.js";
import { USAGE } from "./usage.js";

// Each command's modules are loaded when it runs: `serve` never loads the keystore editor
// (and the yaml package), the usage report or the upstream-key prompts, which would stay
// in the server's heap for its whole life; the other commands start without the gRPC stack.

async function encrypt(args: readonly string[], env: NodeJS.ProcessEnv): Promise<number> {
  const { readUpstreamKey, seal, sealingKey } = await import("./upstream-key-input.js");
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
  // The secret is an upstream key: held to the same rules as add and set-upstream-key.
  out(seal(await readUpstreamKey(), client ?? DEFAULTS_AAD, sealing));
  return 0;
}

/** Runs one CLI invocation and returns the exit code. */
export async function run(argv: readonly string[], env: NodeJS.ProcessEnv): Promise<number> {
  const [command, ...rest] = argv;
  try {
    switch (command) {
      case "serve": {
        parseCommand("serve", rest, {});
        const { serve } = await import("./serve.js");
        return await serve(env);
      }
      case "keystore": {
        const { keystoreCommand } = await import("./keystore-commands.js");
        return await keystoreCommand(rest, env);
      }
      case "usage": {
        const { usageCommand } = await import("./usage-command.js");
        return await usageCommand(rest, env);
      }
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
          command === undefined ? "no command given" : `unknown command ${quoted(command)}`,
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
