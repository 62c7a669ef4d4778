/**
 * What an upstream key must be, in one place. The loader (`keygate keystore check`, the
 * reload, the CLI editor), the CLI's stdin input and the Check path's resolver apply the
 * same rules, so what the file check accepts is what the server will send.
 *
 * - `env:VAR` may not name keygate's own settings (KEYGATE_*: the master key is one), and,
 *   when KEYGATE_UPSTREAM_ENV_PREFIX is set, must name a variable with that prefix.
 * - The key itself becomes an HTTP header value. Envoy's `validate_mutations` refuses a
 *   control character there and answers every request of that client with an empty 500,
 *   so the key is held to visible ASCII and obs-text, with nothing around it.
 * Problems are phrased without the value: they end up in logs and on /keystore.
 */

/** keygate's own variables; refused whatever the case (Windows reads the environment case-insensitively). */
const OWN_VARIABLES = "KEYGATE_";
/** Visible ASCII (0x21–0x7E) and obs-text (0x80–0xFF): no control character, space or DEL. */
const HEADER_VALUE = /^[\x21-\x7E\x80-\xFF]+$/;
const EDGE_WHITESPACE = /^\s|\s$/;

/**
 * Why `env:<name>` may not be an upstream key, or undefined when it may. `allowedPrefix`
 * is KEYGATE_UPSTREAM_ENV_PREFIX (null when unset).
 */
export function envNameProblem(name: string, allowedPrefix: string | null): string | undefined {
  if (name.toUpperCase().startsWith(OWN_VARIABLES)) {
    return "names one of keygate's own settings: KEYGATE_* variables (the master key among them) are never an upstream key";
  }
  if (allowedPrefix !== null && !name.startsWith(allowedPrefix)) {
    return `is outside KEYGATE_UPSTREAM_ENV_PREFIX: the variable's name must start with ${allowedPrefix}`;
  }
  return undefined;
}

/**
 * Why `value` cannot be sent as an upstream key header, or undefined when it can. Says
 * what is wrong ("is empty", "…"), never the value.
 */
export function upstreamKeyValueProblem(value: string): string | undefined {
  if (value.trim() === "") return "is empty";
  if (EDGE_WHITESPACE.test(value))
    return "has whitespace (a space or line break) before or after the key";
  if (!HEADER_VALUE.test(value)) {
    return "holds a character an HTTP header cannot carry (a line break or other control character, a space, DEL, or one beyond U+00FF)";
  }
  return undefined;
}
