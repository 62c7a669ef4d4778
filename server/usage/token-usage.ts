/**
 * Token usage as the response path reads it from a provider's answer, and the one way it
 * leaves the response path. The ext_proc service (server/extproc/) produces it; the usage
 * ledger (SQLite, `keygate usage`) and the budget counters consume it.
 */

/** Token counts from one provider response. */
export interface TokenUsage {
  /** The model the provider reports; "unknown" when the response names none. */
  readonly model: string;
  readonly inputTokens: number;
  readonly outputTokens: number;
  /** Prompt tokens served from the provider's cache (Anthropic cache_read_input_tokens, OpenAI cached_tokens). */
  readonly cacheReadTokens: number;
  /** Prompt tokens written to the provider's cache (Anthropic cache_creation_input_tokens). */
  readonly cacheWriteTokens: number;
}

/** Where each response's usage goes. Called on the event loop: it must not do I/O inline. */
export interface UsageSink {
  record(clientId: string, usage: TokenUsage, now: number): void;
}

/** Every token the provider processed for the response: what a budget counts. */
export function totalTokens(usage: TokenUsage): number {
  return usage.inputTokens + usage.outputTokens + usage.cacheReadTokens + usage.cacheWriteTokens;
}
