/**
 * `keygate keystore add`, `disable`, `enable` and `remove`: the commands that create a
 * client, switch it off and on, or delete it. Every edit goes through keystore-editor;
 * a secret is read from stdin before the lock is taken. `add` prints only the new token
 * on stdout.
 */
import { type Config, loadConfig } from "../config.js";
import { mintToken } from "../crypto/token-format.js";
import { hashToken } from "../crypto/token-hash.js";
import { editKeystore, type NewClient } from "../keystore/edit/keystore-editor.js";
import type { Budget } from "../keystore/format/model.js";
import { envNameProblem } from "../keystore/format/upstream-key-rules.js";
import { quoted, shortened } from "../shown-text.js";
import {
  keystorePath,
  listValue,
  note,
  type OptionSpec,
  out,
  type Parsed,
  parseCommand,
  stringValue,
  UsageError,
} from "./args.js";
import { parseBudget } from "./keystore-budget-commands.js";
import {
  clientIdArgument,
  editOptions,
  KEYSTORE_OPTION,
  reportWrite,
} from "./keystore-command-shared.js";
import { formatTimestamp, parseExpiry } from "./time-args.js";
import { readUpstreamKey, seal, sealingKey } from "./upstream-key-input.js";

const ENV_VARIABLE = /^[A-Za-z_][A-Za-z0-9_]*$/;

const ADD_OPTIONS: OptionSpec = {
  ...KEYSTORE_OPTION,
  name: { type: "string" },
  routes: { type: "string" },
  models: { type: "string" },
  expires: { type: "string" },
  internal: { type: "boolean" },
  "upstream-key-stdin": { type: "boolean" },
  "upstream-key-env": { type: "string" },
  kid: { type: "string" },
  budget: { type: "string" },
};

/** The `add` flags that decide the new client's upstream key; an internal client takes none. */
interface UpstreamKeyFlags {
  readonly fromStdin: boolean;
  readonly fromEnv: string | undefined;
  readonly kid: string | undefined;
  readonly internal: boolean;
}

/** The new client's optional fields, checked, as `add` writes them. */
interface ClientFields {
  readonly name: string | undefined;
  readonly routes: string[] | undefined;
  readonly models: string[] | undefined;
  readonly expires: string | undefined;
  readonly budget: Budget | undefined;
}

/**
 * Adds a client with a fresh token and prints the token (once) on stdout.
 * @throws UsageError for flags that exclude each other; Error for a bad value or a refused edit.
 */
export async function add(args: readonly string[], env: NodeJS.ProcessEnv): Promise<number> {
  const parsed = parseCommand("keystore add", args, ADD_OPTIONS, ["id"]);
  const id = clientIdArgument(parsed);
  const flags = upstreamKeyFlags(parsed);
  const fields = clientFields(parsed, Date.now());
  const config = loadConfig(env);
  const upstreamKey = await upstreamKeyOf(flags, id, config);

  const token = mintToken();
  const path = keystorePath(parsed, env);
  const result = await editKeystore(path, editOptions(config, env), (draft) =>
    draft.addClient(newClient(id, token, fields, upstreamKey, flags.internal)),
  );
  reportWrite(path, result);
  note(`added client "${id}" to ${path}; its token (shown once):`);
  out(token);
  return 0;
}

/** @throws UsageError when the upstream-key flags contradict each other or `--internal`. */
function upstreamKeyFlags(parsed: Parsed): UpstreamKeyFlags {
  const fromStdin = parsed.values["upstream-key-stdin"] === true;
  const fromEnv = stringValue(parsed, "upstream-key-env");
  const kid = stringValue(parsed, "kid");
  const internal = parsed.values.internal === true;
  if (fromStdin && fromEnv !== undefined) {
    throw new UsageError("keystore add: give --upstream-key-stdin or --upstream-key-env, not both");
  }
  if (internal && (fromStdin || fromEnv !== undefined)) {
    throw new UsageError(
      "keystore add: an --internal client is let through without a key swap, so it takes no upstream key",
    );
  }
  if (kid !== undefined && !fromStdin) {
    throw new UsageError("keystore add: --kid only applies with --upstream-key-stdin");
  }
  return { fromStdin, fromEnv, kid, internal };
}

/** @throws Error for an empty name, a route that is not a path prefix, a bad expiry or budget. */
function clientFields(parsed: Parsed, now: number): ClientFields {
  const name = stringValue(parsed, "name");
  if (name !== undefined && name.trim() === "") throw new Error("--name must not be empty");
  const routes = optionalList(parsed, "routes");
  if (routes?.some((route) => !route.startsWith("/"))) {
    throw new Error(
      "--routes takes path prefixes starting with /, e.g. --routes /v1/messages,/services/",
    );
  }
  const models = optionalList(parsed, "models");
  const expiresText = stringValue(parsed, "expires");
  const expires =
    expiresText === undefined
      ? undefined
      : formatTimestamp(parseExpiry("expires", expiresText, now));
  const budgetText = stringValue(parsed, "budget");
  const budget = budgetText === undefined ? undefined : parseBudget("--budget", budgetText);
  return { name, routes, models, expires, budget };
}

/**
 * The `env:` reference or sealed `enc:` value to write, or undefined for none. Reads the
 * secret from stdin only after the sealing key is known.
 * @throws Error for a bad variable name, a missing master key or an unreadable secret.
 */
async function upstreamKeyOf(
  flags: UpstreamKeyFlags,
  id: string,
  config: Config,
): Promise<string | undefined> {
  const { fromStdin, fromEnv, kid } = flags;
  let upstreamKey: string | undefined;
  if (fromEnv !== undefined) {
    if (!ENV_VARIABLE.test(fromEnv)) {
      throw new Error(
        `--upstream-key-env needs an environment variable name (got ${quoted(fromEnv)})`,
      );
    }
    const refused = envNameProblem(fromEnv, config.upstreamEnvPrefix);
    if (refused !== undefined)
      throw new Error(`--upstream-key-env ${shortened(fromEnv)} ${refused}`);
    upstreamKey = `env:${fromEnv}`;
  }
  if (fromStdin) {
    // Key first: no point reading a secret that cannot be sealed.
    const sealing = sealingKey(config.masterKeys, kid);
    upstreamKey = seal(await readUpstreamKey(), id, sealing);
  }
  return upstreamKey;
}

function newClient(
  id: string,
  token: string,
  fields: ClientFields,
  upstreamKey: string | undefined,
  internal: boolean,
): NewClient {
  const { name, routes, models, expires, budget } = fields;
  return {
    id,
    ...(name === undefined ? {} : { name }),
    tokens: [{ sha256: hashToken(token), ...(expires === undefined ? {} : { expires }) }],
    ...(upstreamKey === undefined ? {} : { upstreamKey }),
    ...(routes === undefined ? {} : { routes }),
    ...(models === undefined ? {} : { models }),
    ...(internal ? { kind: "internal" as const } : {}),
    ...(budget === undefined ? {} : { budget }),
  };
}

function optionalList(parsed: Parsed, flag: string): string[] | undefined {
  const value = stringValue(parsed, flag);
  return value === undefined ? undefined : listValue(flag, value);
}

/**
 * `disable` or `enable` a client; says so when it already was.
 * @throws UsageError on malformed arguments; Error for an unknown client or a refused edit.
 */
export async function toggle(
  verb: "disable" | "enable",
  args: readonly string[],
  env: NodeJS.ProcessEnv,
): Promise<number> {
  const parsed = parseCommand(`keystore ${verb}`, args, KEYSTORE_OPTION, ["id"]);
  const id = clientIdArgument(parsed);
  const path = keystorePath(parsed, env);
  const result = await editKeystore(path, editOptions(loadConfig(env), env), (draft) =>
    draft.client(id).setDisabled(verb === "disable"),
  );
  reportWrite(path, result);
  note(
    result.written
      ? `${verb}d client "${id}" in ${path}.`
      : `client "${id}" is already ${verb}d; nothing to do.`,
  );
  return 0;
}

/**
 * Removes a client and its tokens.
 * @throws UsageError on malformed arguments; Error for an unknown client or a refused edit.
 */
export async function remove(args: readonly string[], env: NodeJS.ProcessEnv): Promise<number> {
  const parsed = parseCommand("keystore remove", args, KEYSTORE_OPTION, ["id"]);
  const id = clientIdArgument(parsed);
  const path = keystorePath(parsed, env);
  const result = await editKeystore(path, editOptions(loadConfig(env), env), (draft) =>
    draft.removeClient(id),
  );
  reportWrite(path, result);
  note(`removed client "${id}" from ${path}.`);
  return 0;
}
