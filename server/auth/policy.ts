/**
 * Per-request policy: the configured mode, overridden per Envoy route by
 * `check_settings.context_extensions` (`keygate_mode`, `keygate_credential`).
 */
import { MODES, type Mode } from "../config.js";
import type { CredentialSource } from "./extract-credential.js";

export interface Policy {
  readonly mode: Mode;
  readonly source: CredentialSource;
  /** Set when a route carried a value keygate does not know; the policy then fell back to the strictest choice. */
  readonly misconfigured: string | null;
}

const SOURCES: readonly CredentialSource[] = ["any", "body", "header"];

/**
 * The policy for one request. An unknown `keygate_mode` falls back to enforce (fail
 * closed) and an unknown `keygate_credential` to any; both are reported so they get logged.
 */
export function resolvePolicy(
  defaultMode: Mode,
  extensions: Readonly<Record<string, string>>,
): Policy {
  const problems: string[] = [];
  let mode = defaultMode;
  const modeOverride = extensions.keygate_mode;
  if (modeOverride !== undefined) {
    if ((MODES as readonly string[]).includes(modeOverride)) mode = modeOverride as Mode;
    else {
      mode = "enforce";
      problems.push(`keygate_mode "${modeOverride}" is not one of ${MODES.join(", ")}; enforcing`);
    }
  }
  let source: CredentialSource = "any";
  const sourceOverride = extensions.keygate_credential;
  if (sourceOverride !== undefined) {
    if ((SOURCES as readonly string[]).includes(sourceOverride))
      source = sourceOverride as CredentialSource;
    else
      problems.push(
        `keygate_credential "${sourceOverride}" is not one of ${SOURCES.join(", ")}; using any`,
      );
  }
  return { mode, source, misconfigured: problems.length > 0 ? problems.join("; ") : null };
}
