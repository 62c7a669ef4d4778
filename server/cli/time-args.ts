/**
 * Times on the command line: durations (`--grace 24h`) and expiries (`--expires
 * 2026-12-01T00:00:00Z` or `--expires 90d`), and the RFC 3339 form written to
 * keystore.yaml. Pure: `now` is passed in.
 */

import { quoted } from "../shown-text.js";

const UNIT_MS: Readonly<Record<string, number>> = {
  s: 1000,
  m: 60_000,
  h: 3_600_000,
  d: 86_400_000,
  w: 604_800_000,
};
const DURATION = /^(?:\d+[smhdw])+$/;
const DURATION_PART = /(\d+)([smhdw])/g;
/** RFC 3339 date-time with a zone, as the keystore schema demands. */
const RFC3339 = /^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:[Zz]|[+-]\d{2}:\d{2})$/;
const DURATION_HELP = "a duration such as 0, 90s, 30m, 24h, 7d, 2w or 1h30m";

/**
 * Milliseconds of a duration such as `24h`, `1h30m` or `0`.
 * @throws Error naming the flag when the text is not a duration.
 */
export function parseDuration(flag: string, text: string): number {
  if (text === "0") return 0;
  if (!DURATION.test(text))
    throw new Error(`--${flag} must be ${DURATION_HELP} (got ${quoted(text)})`);
  let total = 0;
  for (const [, amount, unit] of text.matchAll(DURATION_PART)) {
    total += Number(amount) * (UNIT_MS[unit ?? ""] ?? 0);
  }
  return total;
}

/**
 * An expiry from an RFC 3339 date-time or a duration from now, in epoch ms.
 * @throws Error when it is neither, or not in the future.
 */
export function parseExpiry(flag: string, text: string, now: number): number {
  let at: number;
  if (RFC3339.test(text)) at = Date.parse(text);
  else if (DURATION.test(text)) at = now + parseDuration(flag, text);
  else {
    throw new Error(
      `--${flag} must be an RFC 3339 date-time with a zone (2026-12-01T00:00:00Z) or ${DURATION_HELP}`,
    );
  }
  if (!Number.isFinite(at)) throw new Error(`--${flag}: "${text}" is not a real date`);
  if (at <= now) throw new Error(`--${flag} is not in the future (${formatTimestamp(at)})`);
  return at;
}

/** A calendar date alone, taken as the start of that day in UTC. */
const DATE_ONLY = /^\d{4}-\d{2}-\d{2}$/;

/**
 * A start time in epoch ms: a date (`2026-12-01`, midnight UTC), an RFC 3339 date-time, or
 * a duration back from now (`7d`).
 * @throws Error naming the flag when it is none of these, or not a real date.
 */
export function parseSince(flag: string, text: string, now: number): number {
  let at: number;
  if (DATE_ONLY.test(text)) {
    at = Date.parse(`${text}T00:00:00Z`);
    // Date.parse rolls 2026-02-30 over to March; a date that does not round-trip is not real.
    if (Number.isFinite(at) && new Date(at).toISOString().slice(0, 10) !== text) at = Number.NaN;
  } else if (RFC3339.test(text)) at = Date.parse(text);
  else if (DURATION.test(text) || text === "0") at = now - parseDuration(flag, text);
  else {
    throw new Error(
      `--${flag} must be a date (2026-12-01), an RFC 3339 date-time (2026-12-01T00:00:00Z) or ${DURATION_HELP} back from now`,
    );
  }
  // Beyond ±100 000 000 days from 1970 a Date is invalid (a duration such as 99999999999d).
  if (Number.isNaN(new Date(at).getTime())) {
    throw new Error(`--${flag}: ${quoted(text)} is not a real date`);
  }
  return at;
}

/** `2026-12-01T00:00:00Z`: UTC, whole seconds (rounded up, so an expiry is never early). */
export function formatTimestamp(epochMs: number): string {
  return new Date(Math.ceil(epochMs / 1000) * 1000).toISOString().replace(/\.000Z$/, "Z");
}

/** What the keystore loader accepts as RFC 3339 (space separator, `+0200` and `+02` zones too). */
const LENIENT_RFC3339 =
  /^(\d{4}-\d{2}-\d{2})[Tt\s](\d{2}:\d{2}:\d{2}(?:\.\d+)?)(?:([Zz])|([+-]\d{2})(?::?(\d{2}))?)$/;

/** Epoch ms of an expiry as the file holds it, or NaN when it is not one. */
export function timestampValue(text: string): number {
  const match = LENIENT_RFC3339.exec(text);
  if (match === null) return Number.NaN;
  const [, date, time, zulu, hours, minutes] = match;
  const zone = zulu !== undefined ? "Z" : `${hours}:${minutes ?? "00"}`;
  return Date.parse(`${date}T${time}${zone}`);
}
