/**
 * `keygate usage`: token totals per client and model as an aligned table or JSON. Pure:
 * the totals are passed in.
 */
import type { UsageTotals } from "../usage/usage-table.js";
import { alignedTable } from "./aligned-table.js";

/** One client and model as `usage --json` prints them (snake_case, like `keystore list`). */
export interface ReportedUsage {
  readonly client: string;
  readonly model: string;
  readonly requests: number;
  readonly input_tokens: number;
  readonly output_tokens: number;
  readonly cache_read_tokens: number;
  readonly cache_write_tokens: number;
  /** Every kind added up: what a budget counts. */
  readonly total_tokens: number;
}

/** The JSON document `usage --json` prints. */
export interface UsageReport {
  readonly database: string;
  /** The first UTC day counted (`YYYY-MM-DD`). */
  readonly since: string;
  readonly client: string | null;
  readonly usage: readonly ReportedUsage[];
  readonly total: Omit<ReportedUsage, "client" | "model">;
}

export function buildReport(
  database: string,
  since: string,
  client: string | null,
  totals: readonly UsageTotals[],
): UsageReport {
  const usage = totals.map((row) => ({ client: row.clientId, model: row.model, ...counts(row) }));
  const sum = (pick: (row: ReportedUsage) => number) =>
    usage.reduce((total, row) => total + pick(row), 0);
  return {
    database,
    since,
    client,
    usage,
    total: {
      requests: sum((row) => row.requests),
      input_tokens: sum((row) => row.input_tokens),
      output_tokens: sum((row) => row.output_tokens),
      cache_read_tokens: sum((row) => row.cache_read_tokens),
      cache_write_tokens: sum((row) => row.cache_write_tokens),
      total_tokens: sum((row) => row.total_tokens),
    },
  };
}

function counts(row: UsageTotals): Omit<ReportedUsage, "client" | "model"> {
  return {
    requests: row.requests,
    input_tokens: row.inputTokens,
    output_tokens: row.outputTokens,
    cache_read_tokens: row.cacheReadTokens,
    cache_write_tokens: row.cacheWriteTokens,
    total_tokens: row.inputTokens + row.outputTokens + row.cacheReadTokens + row.cacheWriteTokens,
  };
}

export function renderUsageJson(report: UsageReport): string {
  return `${JSON.stringify(report, null, 2)}\n`;
}

const COLUMNS = [
  "CLIENT",
  "MODEL",
  "REQUESTS",
  "INPUT",
  "OUTPUT",
  "CACHE READ",
  "CACHE WRITE",
  "TOTAL",
] as const;
/** Columns from REQUESTS on are numbers, aligned right. */
const FIRST_NUMBER_COLUMN = 2;

/** An aligned table, one client and model per line, and a total line under several. */
export function renderUsageTable(report: UsageReport): string {
  const line = (client: string, model: string, row: UsageReport["total"]) => [
    client,
    model,
    ...[
      row.requests,
      row.input_tokens,
      row.output_tokens,
      row.cache_read_tokens,
      row.cache_write_tokens,
      row.total_tokens,
    ].map(String),
  ];
  const rows = report.usage.map((row) => line(row.client, row.model, row));
  if (rows.length > 1) rows.push(line("total", "", report.total));
  return alignedTable(COLUMNS, rows, FIRST_NUMBER_COLUMN);
}
