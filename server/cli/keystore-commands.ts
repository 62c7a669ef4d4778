/**
 * `keygate keystore <command>`: provisioning. This module dispatches; the commands live
 * by what they touch: keystore-read-commands (check, list), keystore-client-commands
 * (add, disable, enable, remove), keystore-token-commands (rotate, revoke),
 * keystore-upstream-key-commands (set-upstream-key, reencrypt) and
 * keystore-budget-commands (set-budget). Every edit goes through
 * keystore-editor (lock, Document API, validation, atomic write). Secrets are read from
 * stdin before the lock is taken, so a slow paste never holds other edits up. `add` and
 * `rotate` print only the new token on stdout; everything else an operator reads goes to
 * stderr.
 */
import { writeStarterKeystore } from "../keystore/format/starter.js";
import { quoted } from "../shown-text.js";
import { keystorePath, note, out, parseCommand, UsageError } from "./args.js";
import { setBudget } from "./keystore-budget-commands.js";
import { add, remove, toggle } from "./keystore-client-commands.js";
import { type Command, KEYSTORE_OPTION } from "./keystore-command-shared.js";
import { check, list } from "./keystore-read-commands.js";
import { revoke, rotate } from "./keystore-token-commands.js";
import { reencrypt, setUpstreamKey } from "./keystore-upstream-key-commands.js";

const COMMANDS: Readonly<Record<string, Command>> = {
  init,
  check,
  add,
  rotate,
  revoke,
  disable: (args, env) => toggle("disable", args, env),
  enable: (args, env) => toggle("enable", args, env),
  remove,
  "set-upstream-key": setUpstreamKey,
  "set-budget": setBudget,
  list,
  reencrypt,
};

/**
 * Runs `keygate keystore <sub> …` and returns the exit code.
 * @throws UsageError for an unknown subcommand or malformed arguments; Error on failure.
 */
export async function keystoreCommand(
  args: readonly string[],
  env: NodeJS.ProcessEnv,
): Promise<number> {
  const [sub, ...rest] = args;
  const command = sub === undefined ? undefined : COMMANDS[sub];
  if (command === undefined) {
    throw new UsageError(
      sub === undefined ? "keystore needs a subcommand" : `unknown keystore command ${quoted(sub)}`,
    );
  }
  return command(rest, env);
}

/** Writes a starter keystore with one client, "demo", and prints its token once. */
async function init(args: readonly string[], env: NodeJS.ProcessEnv): Promise<number> {
  const path = keystorePath(parseCommand("keystore init", args, KEYSTORE_OPTION), env);
  const { token } = writeStarterKeystore(path);
  note(`wrote ${path} with client "demo"; its token (shown once):`);
  out(token);
  return 0;
}
