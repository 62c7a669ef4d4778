/**
 * `keygate usage [--since T] [--client ID] [--json]`: the tokens each client spent, per
 * model, from the server's database (KEYGATE_DB), read-only so that it runs beside a
 * serving keygate. Usage is stored per UTC day, so `--since` counts from the start of the
 * UTC day it falls in; without it, from the 1st of the current UTC month (the window of a
 * monthly budget).
 */
import { loadConfig } from "../config.js";
import { CLIENT_ID_MESSAGE, isClientId } from "../keystore/format/client-id.js";
import { quoted } from "../shown-text.js";
import { utcDay, utcMonthStart } from "../usage/usage-day.js";
import { TokenUsageTable, type UsageTotals } from "../usage/usage-table.js";
import { note, out, parseCommand, stringValue } from "./args.js";
import { parseSince } from "./time-args.js";
import { buildReport, renderUsageJson, renderUsageTable } from "./usage-report-output.js";

/**
 * Prints the report and returns the exit code.
 * @throws UsageError on malformed arguments; Error (exit 1) for a bad value or no database.
 */
export async function usageCommand(
  args: readonly string[],
  env: NodeJS.ProcessEnv,
): Promise<number> {
  const parsed = parseCommand("usage", args, {
    since: { type: "string" },
    client: { type: "string" },
    json: { type: "boolean" },
  });
  const now = Date.now();
  const sinceText = stringValue(parsed, "since");
  const since =
    sinceText === undefined ? utcMonthStart(now) : utcDay(parseSince("since", sinceText, now));
  const client = stringValue(parsed, "client");
  if (client !== undefined && !isClientId(client)) {
    throw new Error(`invalid client id ${quoted(client)}: ${CLIENT_ID_MESSAGE}`);
  }
  const { dbPath } = loadConfig(env);
  const table = TokenUsageTable.openForReading(dbPath);
  if (table === "missing") {
    throw new Error(`no database at ${dbPath} (KEYGATE_DB): no usage recorded there`);
  }
  let totals: UsageTotals[] = [];
  if (table === "no-usage") note(`${dbPath} was written by a keygate without token usage`);
  else {
    try {
      totals = table.totals(since, client);
    } finally {
      table.close();
    }
  }
  const report = buildReport(dbPath, since, client ?? null, totals);
  if (parsed.values.json === true) out(renderUsageJson(report));
  else {
    note(`token usage since ${since} (UTC) from ${dbPath}`);
    if (totals.length === 0) note("no usage recorded in that time");
    out(renderUsageTable(report));
  }
  return 0;
}
