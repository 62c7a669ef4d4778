/**
 * Secrets enter the CLI on stdin only, never argv (argv is visible in `ps` and shell history).
 */

/**
 * Reads all of stdin as UTF-8 and trims the trailing newline a shell adds.
 * @throws Error when stdin is a terminal with nothing piped, or empty.
 */
export async function readSecretFromStdin(what: string): Promise<string> {
  if (process.stdin.isTTY) process.stderr.write(`Enter ${what}, then Ctrl-D: `);
  const chunks: Buffer[] = [];
  for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
  const value = Buffer.concat(chunks)
    .toString("utf8")
    .replace(/\r?\n$/, "");
  if (value.trim() === "") throw new Error(`no ${what} on stdin`);
  return value;
}
