/**
 * What keeps a rewrite of keystore.yaml from reformatting the operator's file: the
 * indentation and flow-list padding it already uses, and trailing comments given back to
 * the collection their indentation says they belong to.
 */
import {
  type Document,
  isCollection,
  isMap,
  isScalar,
  isSeq,
  type Node,
  type Pair,
  type ToStringOptions,
  visit,
  type YAMLMap,
  type YAMLSeq,
} from "yaml";

/**
 * The options that print `doc` in the layout `text` already has: its indentation step,
 * whether `- ` items are indented under their key (`clients:\n  - id:`) or level with it,
 * and `[ /a ]` rather than `[/a]` as the file's first non-empty flow collection is written.
 */
export function layoutOf(doc: Document.Parsed, text: string): ToStringOptions {
  let indent: number | undefined;
  let indentSeq: boolean | undefined;
  let flowPadding: boolean | undefined;
  visit(doc, {
    Collection(_key, node) {
      const start = node.range?.[0];
      if (!node.flow || flowPadding !== undefined || start === undefined) return;
      const inside = text.slice(start + 1, node.range?.[1]);
      if (/^\s*[\]}]/.test(inside)) return; // empty: says nothing
      flowPadding = inside.startsWith(" ");
    },
    Pair(_key, pair) {
      const value = pair.value;
      if (!isScalar(pair.key) || !isCollection(value) || value.flow) return;
      const keyColumn = columnOf(text, pair.key.range?.[0]);
      const first = value.items[0];
      const itemNode = isMap(value) ? (first as Pair | undefined)?.key : value;
      const itemColumn = columnOf(text, (itemNode as Node | undefined)?.range?.[0]);
      if (keyColumn === undefined || itemColumn === undefined) return;
      const step = itemColumn - keyColumn;
      if (isMap(value) && indent === undefined && step > 0) indent = step;
      if (isSeq(value) && indentSeq === undefined) {
        indentSeq = step > 0;
        if (indent === undefined && step > 0) indent = step;
      }
      return undefined;
    },
  });
  return {
    indent: indent ?? 2,
    indentSeq: indentSeq ?? true,
    lineWidth: 0,
    flowCollectionPadding: flowPadding ?? false,
  };
}

function columnOf(text: string, offset: number | undefined): number | undefined {
  if (offset === undefined) return undefined;
  return offset - (text.lastIndexOf("\n", offset - 1) + 1);
}

/**
 * yaml attaches every comment after the end of a block collection to the innermost
 * collection, whatever its indentation: the starter keystore's commented-out client
 * fields would move into the token list on the first rewrite (and, uncommented there,
 * become schema errors). Give each such comment line back to the collection its
 * indentation says it belongs to.
 */
export function rehomeTrailingComments(doc: Document.Parsed, text: string): void {
  const moves: Array<() => void> = [];
  visit(doc, {
    Collection(_key, node, ancestry) {
      if (node.flow || !node.comment || node.range === undefined || node.range === null) return;
      const chain = [
        ...ancestry.filter((a): a is YAMLMap | YAMLSeq => isCollection(a) && !a.flow),
        node,
      ];
      const indents = chain.map((collection) => columnOf(text, collection.range?.[0]) ?? 0);
      const groups = commentGroups(text.slice(node.range[1], node.range[2]), indents);
      if (groups.size === 0) return;
      moves.push(() => {
        node.comment = null;
        for (const [depth, lines] of groups) {
          const target = chain[depth] as YAMLMap | YAMLSeq;
          const own = lines.join("\n");
          target.comment = target !== node && target.comment ? `${own}\n${target.comment}` : own;
        }
      });
    },
  });
  // Innermost first, so an outer collection's own comment ends up after an inner one's.
  for (const move of moves.reverse()) move();
}

/**
 * The comment lines of `trailer`, grouped by the depth in the chain of collections (with
 * these `indents`, outermost first) each belongs to. A comment belongs to the innermost
 * collection not indented deeper than it; depth only decreases down the trailer.
 */
function commentGroups(trailer: string, indents: readonly number[]): Map<number, string[]> {
  const groups = new Map<number, string[]>();
  let depth = indents.length - 1;
  let blanks = 0;
  for (const line of trailer.split("\n")) {
    const match = /^([ \t]*)#(.*)$/.exec(line);
    if (match === null) {
      if (line.trim() === "") blanks++;
      continue;
    }
    const column = (match[1] ?? "").length;
    while (depth > 0 && (indents[depth] ?? 0) > column) depth--;
    const group = groups.get(depth) ?? [];
    // Blank lines between comment lines of one group are kept (yaml prints "" as one).
    if (group.length > 0) for (; blanks > 0; blanks--) group.push("");
    blanks = 0;
    group.push(match[2] ?? "");
    groups.set(depth, group);
  }
  return groups;
}
