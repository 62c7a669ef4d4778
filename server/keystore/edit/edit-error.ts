/**
 * The one error an edit is refused with. Its own module because every step of an edit
 * (lock, file, draft, validation) throws it and the CLI reports it.
 */

/** An edit that was refused; nothing was written. `details` are extra lines (issues) to show. */
export class KeystoreEditError extends Error {
  readonly details: readonly string[];
  constructor(message: string, details: readonly string[] = []) {
    super(message);
    this.name = "KeystoreEditError";
    this.details = details;
  }
}
