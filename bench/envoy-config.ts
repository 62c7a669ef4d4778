/**
 * envoy/envoy.yaml as the benchmark sections run it: rendered for 127.0.0.1 and the given
 * ports (scripts/render-envoy-config.mjs), without the access log and without the
 * per-client rate limit (it would turn the load into 429s), and without whichever other
 * http filters a section leaves out. Sections edit the returned Document further.
 */
import { type Document, parseDocument } from "yaml";
import { type EnvoyPorts, renderEnvoyConfig } from "../scripts/render-envoy-config.mjs";

/** The HTTP connection manager's typed_config in envoy.yaml. */
export const HCM = [
  "static_resources",
  "listeners",
  0,
  "filter_chains",
  0,
  "filters",
  0,
  "typed_config",
] as const;

export interface HttpFilter {
  readonly name: string;
  readonly typed_config?: Record<string, unknown>;
}

const RATE_LIMIT_FILTER = "envoy.filters.http.local_ratelimit";
const EXT_PROC_TYPE =
  "type.googleapis.com/envoy.extensions.filters.http.ext_proc.v3.ExternalProcessor";

/** An ext_proc filter, bare or wrapped (the provider-errors one sits in an ExtensionWithMatcher). */
export function isExtProc(filter: HttpFilter): boolean {
  return JSON.stringify(filter).includes(EXT_PROC_TYPE);
}

/**
 * The rendered configuration, and its http filters as shipped (before any was dropped).
 * @param drop the filters to leave out besides the rate limit.
 */
export function benchEnvoyDocument(
  ports: EnvoyPorts,
  drop: (filter: HttpFilter) => boolean,
): { readonly doc: Document; readonly filters: readonly HttpFilter[] } {
  const doc = parseDocument(renderEnvoyConfig(ports));
  doc.deleteIn([...HCM, "access_log"]);
  const filters = (doc.getIn([...HCM, "http_filters"]) as { toJSON(): HttpFilter[] }).toJSON();
  for (let index = filters.length - 1; index >= 0; index--) {
    const filter = filters[index];
    if (filter !== undefined && (filter.name === RATE_LIMIT_FILTER || drop(filter)))
      doc.deleteIn([...HCM, "http_filters", index]);
  }
  return { doc, filters };
}
