/**
 * Setting a field of a yaml Document map the way an operator would have written it: an
 * existing value keeps its node (and so its comments), a new field goes where the
 * keystore's canonical order puts it rather than at the end.
 */
import { type Document, isScalar, type Pair, type YAMLMap } from "yaml";

/**
 * Sets `key` in `map` to `value`. An existing scalar is updated in place; anything else
 * existing is replaced; a new pair is inserted by `order`.
 */
export function setField(
  doc: Document,
  map: YAMLMap,
  key: string,
  value: unknown,
  order: readonly string[],
): void {
  const pair = map.items.find(
    (candidate) => isScalar(candidate.key) && candidate.key.value === key,
  );
  if (pair === undefined) {
    insertOrdered(map, doc.createPair(key, value), order);
  } else if (isScalar(pair.value) && (typeof value === "string" || typeof value === "boolean")) {
    pair.value.value = value;
    // A quoted style chosen for the old value may not suit the new one; let yaml choose.
    if (typeof value !== "string") pair.value.type = undefined;
  } else {
    pair.value = doc.createNode(value);
  }
}

/**
 * Inserts `pair` after the last field that comes before it in `order` (unknown keys come
 * last). Not the schema's `sortMapEntries`: that inserts before the first key that sorts
 * after it, which in a map an operator wrote out of order puts a field at the top.
 */
function insertOrdered(map: YAMLMap, pair: Pair, order: readonly string[]): void {
  const rank = (candidate: unknown): number => {
    const key = isScalar(candidate) ? String(candidate.value) : String(candidate);
    const index = order.indexOf(key);
    return index === -1 ? order.length : index;
  };
  const own = rank(pair.key);
  let at = 0;
  map.items.forEach((item, index) => {
    if (rank(item.key) <= own) at = index + 1;
  });
  map.items.splice(at, 0, pair);
}
