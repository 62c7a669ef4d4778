/**
 * The model name as keygate stores and labels it. The name comes from the provider's
 * response, which an OpenAI-compatible upstream may echo from the client's request, so it
 * is bounded before it becomes a database key or a Prometheus label value.
 */

/** Longer than any provider's model id (fine-tuned OpenAI ids run to about 60 characters). */
export const MODEL_NAME_MAX = 100;
/** What model ids are made of; anything else (spaces, quotes, control characters) becomes `_`. */
const NOT_IN_MODEL_NAME = /[^A-Za-z0-9._:/@+-]/g;
/** What the response path reports when the provider names no model. */
export const UNKNOWN_MODEL = "unknown";

/** `model` trimmed, cut to MODEL_NAME_MAX characters, restricted to model-id characters. */
export function normalizeModel(model: string): string {
  const cleaned = model.trim().slice(0, MODEL_NAME_MAX).replace(NOT_IN_MODEL_NAME, "_");
  return cleaned === "" ? UNKNOWN_MODEL : cleaned;
}
