/**
 * JSON-lines logging with pino. Credential headers and key material are redacted by
 * path, so even a careless `logger.info({ headers })` cannot leak a token.
 */
import { type Logger, pino } from "pino";

export type { Logger } from "pino";

/** Paths pino censors wherever they appear in a log object. */
export const REDACT_PATHS = [
  "headers.authorization",
  'headers["x-api-key"]',
  'headers["proxy-authorization"]',
  "headers.cookie",
  "*.headers.authorization",
  '*.headers["x-api-key"]',
  "token",
  "*.token",
  "upstreamKey",
  "*.upstreamKey",
  "upstream_key",
  "*.upstream_key",
  "api_key",
  "*.api_key",
  "masterKey",
  "*.masterKey",
];

/** The process logger, writing JSON lines to the given destination (stdout by default). */
export function createLogger(level: string, destination?: NodeJS.WritableStream): Logger {
  const options = {
    level,
    base: { service: "keygate" },
    redact: { paths: REDACT_PATHS, censor: "[redacted]" },
    timestamp: pino.stdTimeFunctions.isoTime,
    formatters: { level: (label: string) => ({ level: label }) },
  };
  return destination ? pino(options, destination) : pino(options);
}
