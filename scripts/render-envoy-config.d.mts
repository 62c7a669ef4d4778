/** Types for render-envoy-config.mjs (imported by the TypeScript test helpers). */

/** An Envoy token bucket (envoy.type.v3.TokenBucket). */
export interface TokenBucket {
  readonly maxTokens: number;
  readonly tokensPerFill: number;
  /** A protobuf Duration string such as "1s" or "3600s" (at least 50 ms). */
  readonly fillInterval: string;
}

export interface EnvoyPorts {
  /** The ingress listener; 0 lets Envoy pick (read it back from the admin API). */
  readonly listenPort: number;
  /** The admin interface; 0 lets Envoy pick. */
  readonly adminPort: number;
  /** keygate's gRPC port on 127.0.0.1. */
  readonly keygatePort: number;
  /** The upstream (Apollo or a stand-in) on 127.0.0.1. */
  readonly upstreamPort: number;
}

export interface RenderEnvoyOptions extends EnvoyPorts {
  /** Replaces the per-client bucket of the local rate limit (e.g. a tight one for a test). */
  readonly perClientRateLimit?: TokenBucket;
  /**
   * The `transport_socket` of keygate's two clusters (e.g. an UpstreamTlsContext for
   * mutual TLS, as commented in envoy.yaml); plaintext when absent.
   */
  readonly keygateTransportSocket?: Readonly<Record<string, unknown>>;
  /** The file to render; envoy/envoy.yaml by default. */
  readonly configPath?: string;
}

export declare const ENVOY_CONFIG_PATH: string;

/**
 * envoy/envoy.yaml rendered for 127.0.0.1 and the given ports.
 * @throws Error when the shipped file no longer has the listener, clusters or rate limit
 *   descriptor expected.
 */
export declare function renderEnvoyConfig(options: RenderEnvoyOptions): string;
