/**
 * The shapes of secrets keygate handles, in one place: what passes as a provider key
 * (bring your own key), and what must never be printed or forwarded (keygate tokens,
 * provider keys). Matching is by shape, never by lookup.
 */

/** A provider key, recognised by its whole shape, not a prefix: `sk-ant-…` with no separators inside. */
export const PROVIDER_KEY_SHAPE = /^sk-ant-[A-Za-z0-9_-]+$/;

/** The prefix of every keygate token (minted ones, and any an operator chose in that form). */
export const KEYGATE_TOKEN_MARK = "kg_";

/** Anything that may be a secret: a word starting `kg_` (a keygate token) or `sk-` (a provider key). */
const SECRET_SHAPED = /(?:^|[^A-Za-z0-9])(?:kg_|sk-)/;

/** Whether a token is a provider key a client may bring on a recognize route (never one holding a keygate token). */
export function isProviderKey(token: string): boolean {
  return PROVIDER_KEY_SHAPE.test(token) && !token.includes(KEYGATE_TOKEN_MARK);
}

/** Whether text may hold a secret and must not be echoed in a message or log. */
export function looksSecret(text: string): boolean {
  return SECRET_SHAPED.test(text);
}
