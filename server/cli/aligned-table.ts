/** The CLI's plain-text tables (`keystore list`, `usage`): a header and rows, columns padded to fit. */

/**
 * One line per row, cells two spaces apart, trailing spaces trimmed. Columns from
 * `rightAlignedFrom` on (numbers) are aligned right, the others left.
 */
export function alignedTable(
  header: readonly string[],
  rows: readonly (readonly string[])[],
  rightAlignedFrom = header.length,
): string {
  const all = [header, ...rows];
  const widths = header.map((_, column) =>
    Math.max(...all.map((row) => (row[column] ?? "").length)),
  );
  return all
    .map((row) =>
      row
        .map((cell, column) =>
          column >= rightAlignedFrom
            ? cell.padStart(widths[column] ?? 0)
            : cell.padEnd(widths[column] ?? 0),
        )
        .join("  ")
        .trimEnd(),
    )
    .map((line) => `${line}\n`)
    .join("");
}
