/**
 * keygate's ext_proc service on the response path (Envoy's ExternalProcessor/Process, one
 * stream per HTTP response per filter). envoy.yaml runs two ext_proc filters, and each
 * stream says which one it serves by its observability_mode:
 *   - the provider-errors filter (answers awaited; response headers only, the body only
 *     when keygate asks for it): for a request keygate sent with a held key (auth_mode
 *     `known`), a provider failure is replaced by a typed body (provider-errors.ts). When
 *     the body decides it (400/429: billing or not), that one response switches to
 *     BUFFERED with mode_override and the buffered body gets an immediate response.
 *     envoy.yaml sends it nothing but an upstream's 4xx (its matcher skips the filter
 *     otherwise); any other is answered CONTINUE at once and the stream ended.
 *   - the usage filter (observability_mode: Envoy sends the headers and each body chunk
 *     without waiting, and ignores answers, so none are sent): for `known` and `internal`
 *     successes, usage is read from the streamed body (usage-reader.ts) and reported to
 *     the UsageSink when the body ends (or the stream does). For anything else keygate
 *     ends the stream at the headers, which tells Envoy to send nothing more.
 * One filter doing both held the first streamed byte for two keygate round trips (the
 * headers, then the first chunk); now a success waits for none, because envoy.yaml's
 * matcher skips the provider-errors filter for everything but an upstream's 4xx.
 * Only answers from the upstream count (response.code_details via_upstream): Envoy's own
 * replies pass through the filters too. Who the request was for comes from the dynamic
 * metadata keygate's own Check set (namespace envoy.filters.http.ext_authz, forwarded by
 * Envoy's metadata_options), never from anything the caller or the upstream sends.
 * Nothing here can fail a response: whatever keygate cannot read, it lets through.
 */

import type { ProviderErrorType } from "../errors.js";
import type { StreamCall, StreamHandler, StreamListener } from "../grpc/grpc-stream.js";
import { WireError } from "../grpc/protobuf-wire.js";
import type { Logger } from "../logger.js";
import type { UsageSink } from "../usage/token-usage.js";
import {
  BodySendMode,
  decodeProcessingRequest,
  encodeProcessingResponse,
  HeaderSendMode,
  type Part,
  type ProcessingRequest,
} from "./ext-proc-wire.js";
import {
  classifyProviderError,
  errorDisposition,
  MAX_ERROR_BODY_BYTES,
  providerErrorResponse,
} from "./provider-errors.js";
import { createUsageReader, type UsageReader } from "./usage-reader.js";

/** The ext_authz filter's name: the namespace keygate's Check metadata lives in. */
export const EXT_AUTHZ_NAMESPACE = "envoy.filters.http.ext_authz";
/** The attributes envoy.yaml asks for (response_attributes): request_id, and who answered. */
export const REQUEST_ID_ATTRIBUTE = "request.id";
export const CODE_DETAILS_ATTRIBUTE = "response.code_details";
/** response.code_details of an answer the upstream gave (anything else is Envoy's own reply). */
const FROM_UPSTREAM = "via_upstream";
/** Envoy's response code details for keygate's typed answers (access log). */
export const PROVIDER_ERROR_DETAILS = "keygate_provider_error";

export interface ProcessServiceOptions {
  readonly usage: UsageSink;
  readonly logger: Logger;
  /** Counts each typed answer (metrics.ts: keygate_provider_errors_total). */
  readonly onProviderError?: (type: ProviderErrorType) => void;
  /** Counts each authenticated success whose usage went uncounted (keygate_usage_missing_total). */
  readonly onUsageMissing?: (reason: UsageMissingReason) => void;
  /** Clock for usage timestamps and retry-after dates (ms since the epoch). */
  readonly now?: () => number;
}

/** Answers encoded once at start-up: most messages get one of these. */
const CONTINUE: Record<Part, Buffer> = Object.fromEntries(
  (
    [
      "request_headers",
      "response_headers",
      "request_body",
      "response_body",
      "request_trailers",
      "response_trailers",
    ] as const
  ).map((part) => [part, encodeProcessingResponse({ kind: "continue", part })]),
) as Record<Part, Buffer>;
/** envoy.yaml's mode for the provider-errors filter, with this one response's body BUFFERED. */
const HOLD_BODY = encodeProcessingResponse({
  kind: "continue",
  part: "response_headers",
  modeOverride: {
    requestHeaderMode: HeaderSendMode.SKIP,
    responseHeaderMode: HeaderSendMode.SEND,
    requestBodyMode: BodySendMode.NONE,
    responseBodyMode: BodySendMode.BUFFERED,
    requestTrailerMode: HeaderSendMode.SKIP,
    responseTrailerMode: HeaderSendMode.SKIP,
  },
});

/** What one stream is doing with its response's body. */
type BodyPlan =
  | { readonly kind: "none" }
  | { readonly kind: "usage"; readonly reader: UsageReader }
  | {
      readonly kind: "error";
      readonly status: number;
      readonly headers: ReadonlyMap<string, string>;
    };

function contentEncoded(headers: ReadonlyMap<string, string>): boolean {
  const encoding = headers.get("content-encoding")?.trim().toLowerCase() ?? "";
  return encoding !== "" && encoding !== "identity";
}

/**
 * Why an authenticated client's successful response left no usage: its body was
 * content-encoded (not read), or it was read and held none (an endpoint without usage, an
 * OpenAI stream without stream_options.include_usage, a body too large to read).
 */
export type UsageMissingReason = "encoded" | "not_found";

interface Context {
  readonly usage: UsageSink;
  readonly logger: Logger;
  readonly onProviderError: (type: ProviderErrorType) => void;
  readonly onUsageMissing: (reason: UsageMissingReason) => void;
  readonly now: () => number;
}

/** One Process stream: one HTTP response, from its headers to the end of its body. */
class ResponseStream implements StreamListener {
  private clientId = "";
  private authMode = "";
  private requestId = "";
  private plan: BodyPlan = { kind: "none" };
  private reported = false;
  /** Whether the usage filter (observability_mode) sent this stream; set by its first message. */
  private observing: boolean | undefined;

  constructor(
    private readonly call: StreamCall,
    private readonly context: Context,
  ) {}

  onMessage(message: Buffer): void {
    const request = decodeProcessingRequest(message, EXT_AUTHZ_NAMESPACE);
    if (request.part === undefined)
      throw new WireError("ProcessingRequest carries no request or response part");
    // One filter sends a stream's messages, so its first one says which kind it is.
    this.observing ??= request.observabilityMode;
    if (request.observabilityMode !== this.observing)
      throw new WireError("observability_mode changed within a stream");
    if (this.observing) this.observe(request);
    else this.call.send(this.answer(request));
    // Nothing more to read (the body not wanted, answered in full, or at its end): keygate
    // ends the call itself. Envoy then sends nothing more and ignores the stream for the
    // rest of the response, instead of resetting it when the response is over, which cost
    // Node an error object with a stack trace per response.
    if (request.endOfStream || this.plan.kind === "none") this.call.end();
  }

  /** A client that went away mid-stream was still billed for what the provider sent. */
  onClose(): void {
    this.report();
  }

  /** The usage filter's messages: read, never answered (Envoy does not wait for them). */
  private observe(request: ProcessingRequest): void {
    if (request.part === "response_headers") {
      this.readHeaders(request);
      this.planUsage(request);
    }
    if (request.part !== "response_body" || this.plan.kind !== "usage") return;
    this.plan.reader.push(request.body);
    // Parsing a JSON body (up to 1 MiB) waits for the next turn.
    if (request.endOfStream) setImmediate(() => this.report());
  }

  /** The provider-errors filter's messages: each gets exactly one answer. */
  private answer(request: ProcessingRequest): Buffer {
    if (request.part === "response_headers") {
      this.readHeaders(request);
      return this.answerHeaders(request);
    }
    if (request.part === "response_body") return this.answerBody(request);
    // Parts envoy.yaml does not send: let them through unchanged.
    return CONTINUE[request.part as Part];
  }

  /** Who the response belongs to, as keygate's Check recorded it. */
  private readHeaders(request: ProcessingRequest): void {
    this.clientId = request.metadata.get("client_id") ?? "";
    this.authMode = request.metadata.get("auth_mode") ?? "";
    this.requestId = request.attributes.get(REQUEST_ID_ATTRIBUTE) ?? "";
  }

  /**
   * Envoy's own replies (keygate's denials, the rate limit's 429, a 503 with no upstream)
   * pass through here too: they are neither provider errors nor billed.
   */
  private fromUpstreamForAClient(request: ProcessingRequest): boolean {
    return this.clientId !== "" && request.attributes.get(CODE_DETAILS_ATTRIBUTE) === FROM_UPSTREAM;
  }

  /** The provider-errors answer to the response headers: typed, held for its body, or passed. */
  private answerHeaders(request: ProcessingRequest): Buffer {
    const { headers } = request;
    const status = Number.parseInt(headers.get(":status") ?? "", 10);
    if (this.authMode !== "known" || status < 400 || !this.fromUpstreamForAClient(request))
      return CONTINUE.response_headers;
    // Not when there is none, nor when it is content-encoded (gzip, br...).
    const readableBody = !request.endOfStream && !contentEncoded(headers);
    const disposition = errorDisposition(status, readableBody);
    if (disposition === "decide-now")
      return this.typedError(status, headers, undefined) ?? CONTINUE.response_headers;
    if (disposition !== "needs-body") return CONTINUE.response_headers;
    this.plan = { kind: "error", status, headers };
    return HOLD_BODY;
  }

  /** The usage filter's decision at the headers: read this body, or end the stream. */
  private planUsage(request: ProcessingRequest): void {
    const { headers } = request;
    const status = Number.parseInt(headers.get(":status") ?? "", 10);
    const billable =
      (this.authMode === "known" || this.authMode === "internal") &&
      status >= 200 &&
      status < 300 &&
      !request.endOfStream &&
      this.fromUpstreamForAClient(request);
    if (!billable) return;
    // envoy.yaml asks the upstream for identity bodies; one that compresses anyway escapes
    // counting, and operators should see that.
    if (contentEncoded(headers)) {
      this.context.onUsageMissing("encoded");
      return;
    }
    const reader = createUsageReader(headers.get("content-type") ?? "");
    // Neither JSON nor Server-Sent Events: no usage to read.
    if (reader === undefined) this.context.onUsageMissing("not_found");
    else this.plan = { kind: "usage", reader };
  }

  /**
   * The provider-errors filter's body: only a held key's 400/429, switched to BUFFERED by
   * mode_override, so Envoy sends it whole in this one message (end_of_stream is false
   * when trailers follow, which envoy.yaml does not send).
   */
  private answerBody(request: ProcessingRequest): Buffer {
    const { plan } = this;
    if (plan.kind !== "error") return CONTINUE.response_body;
    this.plan = { kind: "none" };
    const body = request.body.length <= MAX_ERROR_BODY_BYTES ? request.body : undefined;
    return this.typedError(plan.status, plan.headers, body) ?? CONTINUE.response_body;
  }

  /** The immediate response for a provider failure; undefined when the response passes as is. */
  private typedError(
    status: number,
    headers: ReadonlyMap<string, string>,
    body: Buffer | undefined,
  ): Buffer | undefined {
    const { now, logger } = this.context;
    const failure = classifyProviderError(status, headers, body, now(), this.requestId);
    if (failure === undefined) return undefined;
    const answer = providerErrorResponse(failure, this.requestId);
    this.context.onProviderError(failure.type);
    logger.info(
      {
        client_id: this.clientId,
        provider_status: status,
        type: failure.type,
        provider_request_id: failure.providerRequestId,
        request_id: this.requestId,
      },
      "provider error answered",
    );
    return encodeProcessingResponse({
      kind: "immediate",
      ...answer,
      details: PROVIDER_ERROR_DETAILS,
    });
  }

  /** Reports the usage read, once: at the end of the body, or when the stream ends early. */
  private report(): void {
    if (this.reported || this.plan.kind !== "usage") return;
    this.reported = true;
    const read = this.plan.reader.result();
    if (read === undefined) {
      this.context.onUsageMissing("not_found");
      return;
    }
    this.context.usage.record(this.clientId, read, this.context.now());
    this.context.logger.debug(
      {
        client_id: this.clientId,
        model: read.model,
        input_tokens: read.inputTokens,
        output_tokens: read.outputTokens,
        cache_read_tokens: read.cacheReadTokens,
        cache_write_tokens: read.cacheWriteTokens,
      },
      "response usage",
    );
  }
}

/** The ext_proc Process handler: one ResponseStream per call. */
export function createProcessService(options: ProcessServiceOptions): StreamHandler {
  const context: Context = {
    usage: options.usage,
    logger: options.logger,
    onProviderError: options.onProviderError ?? (() => {}),
    onUsageMissing: options.onUsageMissing ?? (() => {}),
    now: options.now ?? Date.now,
  };
  return (call) => new ResponseStream(call, context);
}
