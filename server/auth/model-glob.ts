/**
 * Matching a body's `model` against a client's `models` globs (`*` matches any run of
 * characters). Linear in the model's length: a glob is split once into literal parts and
 * matched by prefix, suffix and leftmost search, so no pattern can backtrack.
 */

/** Longer `model` values are refused outright: no provider names a model like that. */
export const MAX_MODEL_LENGTH = 256;

const partsCache = new Map<string, readonly string[]>();

function partsOf(glob: string): readonly string[] {
  let parts = partsCache.get(glob);
  if (parts === undefined) {
    parts = glob.split("*");
    partsCache.set(glob, parts);
  }
  return parts;
}

/** Whether `model` matches `glob`. */
export function globMatches(glob: string, model: string): boolean {
  const parts = partsOf(glob);
  if (parts.length === 1) return glob === model;
  const first = parts[0] as string;
  const last = parts[parts.length - 1] as string;
  const end = model.length - last.length;
  if (end < first.length || !model.startsWith(first) || !model.endsWith(last)) return false;
  // Taking each middle part at its leftmost place leaves the most room for the rest.
  let at = first.length;
  for (let k = 1; k < parts.length - 1; k++) {
    const part = parts[k] as string;
    const found = model.indexOf(part, at);
    if (found === -1 || found + part.length > end) return false;
    at = found + part.length;
  }
  return true;
}

/** Whether `model` is allowed by any of `globs`. */
export function modelAllowed(globs: readonly string[], model: string): boolean {
  if (model.length > MAX_MODEL_LENGTH) return false;
  return globs.some((glob) => globMatches(glob, model));
}
