/**
 * The check every edit passes before it is written: the edited text must load as the
 * server would load it, and only warnings the edit introduced are reported.
 */
import { type LoadOptions, parseKeystore } from "../format/load.js";
import { KeystoreError, type KeystoreIssue } from "../format/model.js";
import { KeystoreEditError } from "./edit-error.js";

/**
 * Validates `edited` with the loader and returns the warnings it has that `original`
 * did not have.
 * @throws KeystoreEditError when the edited text is not a valid keystore (its issues in
 *   `details`, without line:column: those would point into text that was never written).
 */
export function validateEdit(
  original: string,
  edited: string,
  options: LoadOptions,
): KeystoreIssue[] {
  let after: readonly KeystoreIssue[];
  try {
    after = parseKeystore(edited, options).warnings;
  } catch (error) {
    if (!(error instanceof KeystoreError)) throw error;
    throw new KeystoreEditError(
      `the edit would leave ${options.file} invalid, so nothing was written`,
      error.issues.map((issue) => `  ${issue.message}`),
    );
  }
  return newWarnings(original, after, options);
}

/**
 * The warnings the edit introduced, compared by problem (the path part moves when a
 * client is added or removed above it), so an edit does not repeat old news.
 */
function newWarnings(
  original: string,
  after: readonly KeystoreIssue[],
  options: LoadOptions,
): KeystoreIssue[] {
  // Usually there are none, and then the original need not be parsed a second time.
  if (after.length === 0) return [];
  let before: readonly KeystoreIssue[] = [];
  try {
    before = parseKeystore(original, options).warnings;
  } catch {
    // The original was invalid: every warning of the result is news.
  }
  const problem = (issue: KeystoreIssue) => issue.message.replace(/^[^:]*: /, "");
  const known = new Set(before.map(problem));
  return after.filter((issue) => !known.has(problem(issue)));
}
