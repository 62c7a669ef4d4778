/**
 * Budgets on the command line: `TOKENS/day` or `TOKENS/month` (`--budget 100000/day` on
 * `keystore add`), and `keygate keystore set-budget <id> (TOKENS/PER | --clear)` for a
 * client that exists. Every edit goes through keystore-editor.
 */
import { loadConfig } from "../config.js";
import { editKeystore } from "../keystore/edit/keystore-editor.js";
import type { Budget } from "../keystore/format/model.js";
import { quoted } from "../shown-text.js";
import { keystorePath, note, parseCommand, UsageError } from "./args.js";
import {
  clientIdArgument,
  editOptions,
  KEYSTORE_OPTION,
  reportWrite,
} from "./keystore-command-shared.js";

const BUDGET = /^([1-9][0-9]{0,15})\/(day|month)$/;
export const BUDGET_HELP = "TOKENS/day or TOKENS/month (UTC windows), e.g. 100000/day";

/**
 * `100000/day` → {tokens: 100000, per: "day"}; `_` between digits is allowed (1_000_000/month).
 * @throws Error naming the flag when the text is not a budget.
 */
export function parseBudget(flag: string, text: string): Budget {
  const match = BUDGET.exec(text.trim().replace(/(?<=\d)_(?=\d)/g, ""));
  const tokens = Number(match?.[1]);
  if (match === null || !Number.isSafeInteger(tokens))
    throw new Error(`${flag} must be ${BUDGET_HELP} (got ${quoted(text)})`);
  return { tokens, per: match[2] as Budget["per"] };
}

/** `100000/day` as an operator wrote it. */
export function formatBudget(budget: Budget): string {
  return `${budget.tokens}/${budget.per}`;
}

/**
 * Sets or clears a client's budget; says so when it was already that.
 * @throws UsageError for a missing or doubled budget; Error for a bad budget, an unknown client or a refused edit.
 */
export async function setBudget(args: readonly string[], env: NodeJS.ProcessEnv): Promise<number> {
  const parsed = parseCommand(
    "keystore set-budget",
    args,
    { ...KEYSTORE_OPTION, clear: { type: "boolean" } },
    ["id", "budget?"],
  );
  const id = clientIdArgument(parsed);
  const text = parsed.positionals[1];
  const clear = parsed.values.clear === true;
  if ((text === undefined) === !clear)
    throw new UsageError(`keystore set-budget needs ${BUDGET_HELP}, or --clear (not both)`);
  const budget = text === undefined ? undefined : parseBudget("the budget", text);
  const path = keystorePath(parsed, env);
  const result = await editKeystore(path, editOptions(loadConfig(env), env), (draft) =>
    draft.client(id).setBudget(budget),
  );
  reportWrite(path, result);
  const what = budget === undefined ? "no budget" : `a budget of ${formatBudget(budget)}`;
  note(
    result.written
      ? `client "${id}" now has ${what} in ${path}; keygate applies it on reload.`
      : `client "${id}" already has ${what}; nothing to do.`,
  );
  return 0;
}
