/**
 * Text from keystore.yaml or the command line as a message may show it. Messages reach
 * the log, /keystore and the terminal; a secret pasted in the wrong place (a provider key
 * as a YAML key, a token as a client id) must not travel with them. Anything shaped like a
 * secret becomes <redacted>, a long name is cut short (the message's line and column say
 * where it is), and quoting keeps control characters off the terminal.
 */
import { looksSecret } from "./crypto/secret-shapes.js";

export const REDACTED = "<redacted>";
/** Names up to this long are shown whole: every field keygate knows is far shorter. */
const MAX_SHOWN = 24;
/** How much of a longer name is shown. */
const SHOWN_OF_LONG = 16;

/** `text` cut to what a message shows, or <redacted>; not quoted. */
export function shortened(text: string): string {
  if (looksSecret(text)) return REDACTED;
  return text.length > MAX_SHOWN ? `${text.slice(0, SHOWN_OF_LONG)}…` : text;
}

/** `text` in double quotes (JSON-escaped), cut short; <redacted> unquoted when it may be a secret. */
export function quoted(text: string): string {
  const shown = shortened(text);
  return shown === REDACTED ? REDACTED : JSON.stringify(shown);
}

/**
 * A message written by someone else (a YAML parser, an argument parser) with every word
 * that may be a secret redacted and every long word cut short.
 */
export function scrubbed(message: string): string {
  return message.replace(/\S+/g, shortened);
}

/** A message of our own with any word shaped like a secret redacted (a last line of defence). */
export function withoutSecrets(message: string): string {
  return looksSecret(message)
    ? message.replace(/\S+/g, (word) => (looksSecret(word) ? REDACTED : word))
    : message;
}

/**
 * Free text from the file (a client's `name`) as a listing shows it: whole, but
 * <redacted> when it may be a secret, and with control characters (which could move the
 * cursor or rewrite a terminal) shown as U+FFFD.
 */
export function listed(text: string): string {
  return looksSecret(text) ? REDACTED : text.replace(/\p{Cc}/gu, "\ufffd");
}
