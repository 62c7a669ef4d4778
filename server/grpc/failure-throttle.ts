/**
 * Brute-force throttling state: failed credentials per request source in a fixed window,
 * held in a bounded LRU. Pure bookkeeping (no clock, no logger: `now` is passed in);
 * throttle-guard.ts wires it to Checks, logs and metrics.
 */
import { isIPv4, isIPv6 } from "node:net";
import type { CheckAttributes } from "../auth/check-attributes.js";

/** Sources tracked at most; the least recently touched one is evicted past this. */
export const DEFAULT_MAX_SOURCES = 10_000;

const XFF_HEADER = "x-forwarded-for";

/** `a.b.c.d:port`, as some load balancers (Azure Application Gateway) append it. */
const IPV4_WITH_PORT = /^(\d{1,3}(?:\.\d{1,3}){3}):\d{1,5}$/;
/** `[v6]` or `[v6]:port`. */
const BRACKETED_IPV6 = /^\[([^\]]+)\](?::\d{1,5})?$/;
const IPV4_MAPPED = /^::ffff:(\d{1,3}(?:\.\d{1,3}){3})$/i;

/** The 4 leading 16-bit groups of an IPv6 address, zero-padded; the address must be valid. */
function ipv6Prefix64(address: string): string {
  const [head = "", tail] = address.toLowerCase().split("::") as [string, string | undefined];
  const groupsOf = (part: string): string[] => (part === "" ? [] : part.split(":"));
  let groups = groupsOf(head);
  if (tail !== undefined) {
    const right = groupsOf(tail);
    // An embedded IPv4 tail (::ffff:1.2.3.4 forms) fills two groups.
    const rightWidth = right.reduce((n, group) => n + (group.includes(".") ? 2 : 1), 0);
    groups = [...groups, ...Array<string>(8 - groups.length - rightWidth).fill("0"), ...right];
  }
  return groups
    .slice(0, 4)
    .map((group) => group.padStart(4, "0"))
    .join(":");
}

/**
 * One address as the key of a source, or null when the text is not an IP address. IPv6
 * sources are keyed by their /64: one host usually holds a whole /64, and counting each of
 * its 2^64 addresses apart would let it spray guesses from fresh addresses.
 */
export function sourceKey(text: string): string | null {
  let address = text.trim();
  address = BRACKETED_IPV6.exec(address)?.[1] ?? IPV4_WITH_PORT.exec(address)?.[1] ?? address;
  address = IPV4_MAPPED.exec(address)?.[1] ?? address;
  if (isIPv4(address)) return address;
  const withoutZone = address.replace(/%.*$/, "");
  if (isIPv6(withoutZone)) return `${ipv6Prefix64(withoutZone)}::/64`;
  return null;
}

/**
 * Names the source a failure is counted against. With `trustedHops` 0 it is the peer
 * address Envoy reports (attributes.source: the TCP peer, whatever use_remote_address and
 * xff_num_trusted_hops say). Otherwise it is the x-forwarded-for entry `trustedHops`
 * positions from the right (0 being the rightmost): with use_remote_address, Envoy appends
 * its peer (the nearest proxy) last, and each trusted proxy appended the address it saw
 * before that, so the same number as Envoy's xff_num_trusted_hops names the same client.
 * Never the leftmost entry: a client can prepend anything. A header too short for the
 * trust depth, or an entry that is not an IP address, falls back to the peer address.
 * Returns "" when there is no usable address at all (every such request shares one source).
 */
export function sourceOf(attributes: CheckAttributes, trustedHops: number): string {
  const peer = sourceKey(attributes.sourceAddress) ?? attributes.sourceAddress;
  if (trustedHops === 0) return peer;
  const forwarded = attributes.headers.get(XFF_HEADER);
  if (forwarded === undefined) return peer;
  const entries = forwarded.split(",");
  const entry = entries[entries.length - 1 - trustedHops];
  if (entry === undefined) return peer;
  return sourceKey(entry) ?? peer;
}

interface Window {
  /** When the window opened: the source's first failure in it, epoch ms. */
  readonly start: number;
  failures: number;
}

/**
 * Failure counts per source in a fixed window that opens at a source's first failure and
 * lasts `windowMs`. A source is throttled once it has `failures` failures in an open
 * window, until the window closes. Over time a source gets at most `failures` guesses per
 * window on average (at most 2 × failures − 1 in a burst across a window boundary), and
 * memory is O(1) per source whatever the limit.
 *
 * The sources live in an LRU of `maxSources` (a Map in least-recently-touched order).
 * Evicting a throttled source resets its count, but that is no bypass worth having: a
 * source is only evicted after `maxSources` other sources have each failed since it was
 * last touched (a throttled source is touched by every refused attempt), and source
 * addresses cannot be forged (the TCP peer, or an entry appended by a trusted proxy).
 * An attacker holding that many addresses already gets `failures` guesses per window from
 * each of them; an eviction buys it `failures` more guesses for at least `maxSources` spent.
 */
export class FailureThrottle {
  readonly #limit: number;
  readonly #windowMs: number;
  readonly #maxSources: number;
  readonly #windows = new Map<string, Window>();

  /** @throws RangeError when a setting is not a positive integer. */
  constructor(options: {
    readonly failures: number;
    readonly windowMs: number;
    readonly maxSources?: number;
  }) {
    const maxSources = options.maxSources ?? DEFAULT_MAX_SOURCES;
    for (const [name, value] of Object.entries({ ...options, maxSources }))
      if (!Number.isInteger(value) || value < 1)
        throw new RangeError(`FailureThrottle: ${name} must be a positive integer (got ${value})`);
    this.#limit = options.failures;
    this.#windowMs = options.windowMs;
    this.#maxSources = maxSources;
  }

  #open(window: Window | undefined, now: number): window is Window {
    return window !== undefined && now - window.start < this.#windowMs;
  }

  /** Marks a source most recently used. */
  #touch(source: string, window: Window): void {
    this.#windows.delete(source);
    this.#windows.set(source, window);
  }

  /** True while `source` has used up its failures in an open window. */
  isThrottled(source: string, now: number): boolean {
    const window = this.#windows.get(source);
    if (!this.#open(window, now) || window.failures < this.#limit) return false;
    this.#touch(source, window);
    return true;
  }

  /**
   * Counts one failed credential from `source`.
   * @returns true when this failure is the one that throttles the source (once per window).
   */
  recordFailure(source: string, now: number): boolean {
    const current = this.#windows.get(source);
    if (this.#open(current, now)) {
      current.failures += 1;
      this.#touch(source, current);
      return current.failures === this.#limit;
    }
    this.#windows.delete(source);
    this.#sweep(now);
    while (this.#windows.size >= this.#maxSources) this.#evictOldest();
    this.#windows.set(source, { start: now, failures: 1 });
    return this.#limit === 1;
  }

  /** Sources with an open window; drops every closed one (a full pass: for scrapes, not per Check). */
  trackedSources(now: number): number {
    for (const [source, window] of this.#windows)
      if (!this.#open(window, now)) this.#windows.delete(source);
    return this.#windows.size;
  }

  #evictOldest(): void {
    const oldest = this.#windows.keys().next();
    if (!oldest.done) this.#windows.delete(oldest.value);
  }

  /**
   * Drops closed windows from the least recently touched end. Touches happen at or after a
   * window's start, so the first open window found ends the sweep; closed windows behind it
   * stay until the LRU reaches them (they count as fresh if their source fails again).
   */
  #sweep(now: number): void {
    for (const [source, window] of this.#windows) {
      if (this.#open(window, now)) return;
      this.#windows.delete(source);
    }
  }
}
