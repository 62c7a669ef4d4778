/**
 * Targets and their PASS/FAIL, and the two renderings of the results: a plain-text
 * table for the terminal and bench/results/latest.md (the JSON is the results object).
 */

export type Comparison = "<=" | ">=" | "<";

export interface Target {
  readonly name: string;
  /** null when it could not be measured (that is a FAIL, with the reason in `note`). */
  readonly value: number | null;
  readonly comparison: Comparison;
  readonly limit: number;
  readonly unit: string;
  readonly pass: boolean;
  readonly note?: string;
}

export function target(
  name: string,
  value: number | null,
  comparison: Comparison,
  limit: number,
  unit: string,
  note?: string,
): Target {
  let pass = false;
  if (value !== null && Number.isFinite(value)) {
    if (comparison === "<=") pass = value <= limit;
    else if (comparison === ">=") pass = value >= limit;
    else pass = value < limit;
  }
  return { name, value, comparison, limit, unit, pass, ...(note === undefined ? {} : { note }) };
}

/** A table as aligned plain text (first row is the header). */
export function textTable(rows: readonly (readonly string[])[]): string {
  const widths: number[] = [];
  for (const row of rows) {
    row.forEach((cell, index) => {
      widths[index] = Math.max(widths[index] ?? 0, cell.length);
    });
  }
  const line = (row: readonly string[]) =>
    row
      .map((cell, index) => cell.padEnd(widths[index] ?? 0))
      .join("  ")
      .trimEnd();
  const [header, ...body] = rows;
  if (!header) return "";
  return [line(header), widths.map((w) => "-".repeat(w)).join("  "), ...body.map(line)].join("\n");
}

/** A table as GitHub markdown (first row is the header). */
export function markdownTable(rows: readonly (readonly string[])[]): string {
  const [header, ...body] = rows;
  if (!header) return "";
  const line = (row: readonly string[]) =>
    `| ${row.map((c) => c.replace(/\|/g, "\\|")).join(" | ")} |`;
  return [line(header), line(header.map(() => "---")), ...body.map(line)].join("\n");
}

export function targetRows(targets: readonly Target[]): string[][] {
  return [
    ["target", "measured", "limit", "result"],
    ...targets.map((t) => [
      t.name,
      t.value === null ? "n/a" : `${t.value} ${t.unit}`,
      `${t.comparison} ${t.limit} ${t.unit}`,
      `${t.pass ? "PASS" : "FAIL"}${t.note ? ` (${t.note})` : ""}`,
    ]),
  ];
}
