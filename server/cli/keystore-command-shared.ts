/**
 * What the `keygate keystore` commands share: the `--keystore` option, the client-id
 * argument, the editor's options taken from the config, and what an operator hears
 * after a write.
 */
import type { Config } from "../config.js";
import type { EditOptions, EditResult } from "../keystore/edit/keystore-editor.js";
import { CLIENT_ID_MESSAGE, isClientId } from "../keystore/format/client-id.js";
import { formatIssue } from "../keystore/format/model.js";
import { quoted } from "../shown-text.js";
import { note, type OptionSpec, type Parsed } from "./args.js";

export const KEYSTORE_OPTION: OptionSpec = { keystore: { type: "string" } };

/** One `keygate keystore <sub>` implementation: its arguments in, the exit code out. */
export type Command = (args: readonly string[], env: NodeJS.ProcessEnv) => Promise<number>;

export function editOptions(config: Config, env: NodeJS.ProcessEnv): EditOptions {
  return {
    masterKeys: config.masterKeys,
    env,
    requireClients: config.mode === "enforce",
    upstreamEnvPrefix: config.upstreamEnvPrefix,
  };
}

/** @throws Error when the id cannot be a client id (so a typo is not looked up or written). */
export function clientIdArgument(parsed: Parsed): string {
  const id = parsed.positionals[0] ?? "";
  if (!isClientId(id)) throw new Error(`invalid client id ${quoted(id)}: ${CLIENT_ID_MESSAGE}`);
  return id;
}

export function plural(count: number, noun: string): string {
  return `${count} ${noun}${count === 1 ? "" : "s"}`;
}

/** What an operator should hear after a write: new warnings, a tightened mode, a lost owner. */
export function reportWrite(path: string, result: EditResult<unknown>): void {
  // Checked against this shell's environment and master keys, which may not be the server's.
  for (const warning of result.warnings)
    note(`warning: ${formatIssue(warning)} (as this shell sees it)`);
  if (result.previousMode !== undefined && result.mode !== undefined) {
    note(
      `note: ${path} was mode ${octal(result.previousMode)}; written as ${octal(result.mode)} (it lists credentials)`,
    );
  }
  if (result.ownerNotKept) {
    note(`note: could not keep the owner of ${path}; check that keygate can still read it`);
  }
}

function octal(mode: number): string {
  return `0${mode.toString(8).padStart(3, "0")}`;
}
