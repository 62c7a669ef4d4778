/**
 * Brute-force throttling as named table cases: the window, the LRU bound under a spray of
 * sources, which x-forwarded-for entry names the source at each trust depth, and which
 * decisions count as a failed credential.
 */
import test from "ava";
import { decodeCheckRequest } from "../../server/auth/check-attributes.js";
import type { DenialReason } from "../../server/errors.js";
import { FailureThrottle, sourceKey, sourceOf } from "../../server/grpc/failure-throttle.js";
import { countsAsFailure } from "../../server/grpc/throttle-guard.js";
import { checkRequest } from "../helpers/check-request.js";
import { serializeCheckRequest } from "../helpers/envoy-protos.js";

const T0 = Date.parse("2026-12-03T05:00:00Z");
const WINDOW_MS = 60_000;

type Step =
  | { readonly at: number; readonly fail: string; readonly throttles?: boolean }
  | { readonly at: number; readonly check: string; readonly throttled: boolean };

const windowCases: { name: string; failures: number; steps: Step[] }[] = [
  {
    name: "a source is throttled once it reaches the limit, not before",
    failures: 3,
    steps: [
      { at: T0, fail: "198.51.100.7" },
      { at: T0 + 1, fail: "198.51.100.7" },
      { at: T0 + 2, check: "198.51.100.7", throttled: false },
      { at: T0 + 3, fail: "198.51.100.7", throttles: true },
      { at: T0 + 4, check: "198.51.100.7", throttled: true },
    ],
  },
  {
    name: "another source is unaffected",
    failures: 2,
    steps: [
      { at: T0, fail: "198.51.100.7" },
      { at: T0, fail: "198.51.100.7", throttles: true },
      { at: T0 + 1, check: "198.51.100.8", throttled: false },
      { at: T0 + 1, fail: "198.51.100.8" },
      { at: T0 + 1, check: "198.51.100.8", throttled: false },
    ],
  },
  {
    name: "the window rolls over at its first failure plus its length",
    failures: 2,
    steps: [
      { at: T0, fail: "198.51.100.7" },
      { at: T0 + 30_000, fail: "198.51.100.7", throttles: true },
      { at: T0 + WINDOW_MS - 1, check: "198.51.100.7", throttled: true },
      { at: T0 + WINDOW_MS, check: "198.51.100.7", throttled: false },
      // A fresh window: one failure is below the limit again.
      { at: T0 + WINDOW_MS, fail: "198.51.100.7" },
      { at: T0 + WINDOW_MS + 1, check: "198.51.100.7", throttled: false },
    ],
  },
  {
    name: "failures spread over more than a window never add up",
    failures: 2,
    steps: [
      { at: T0, fail: "198.51.100.7" },
      { at: T0 + WINDOW_MS, fail: "198.51.100.7" },
      { at: T0 + 2 * WINDOW_MS, fail: "198.51.100.7" },
      { at: T0 + 2 * WINDOW_MS, check: "198.51.100.7", throttled: false },
    ],
  },
  {
    name: "it throttles once per window: later failures in it do not throttle again",
    failures: 1,
    steps: [
      { at: T0, fail: "198.51.100.7", throttles: true },
      { at: T0 + 1, fail: "198.51.100.7", throttles: false },
      { at: T0 + WINDOW_MS, fail: "198.51.100.7", throttles: true },
    ],
  },
];

for (const { name, failures, steps } of windowCases) {
  test(`window: ${name}`, (t) => {
    const throttle = new FailureThrottle({ failures, windowMs: WINDOW_MS });
    for (const [index, step] of steps.entries()) {
      if ("fail" in step)
        t.is(
          throttle.recordFailure(step.fail, step.at),
          step.throttles ?? false,
          `step ${index}: failure`,
        );
      else t.is(throttle.isThrottled(step.check, step.at), step.throttled, `step ${index}: check`);
    }
  });
}

test("LRU: a spray of 100 000 distinct sources keeps at most the cap", (t) => {
  const cap = 10_000;
  const throttle = new FailureThrottle({ failures: 3, windowMs: WINDOW_MS, maxSources: cap });
  for (let i = 0; i < 100_000; i++) {
    throttle.recordFailure(`10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}`, T0 + i);
    if (i % 10_000 === 9_999) t.true(throttle.trackedSources(T0 + i) <= cap, `after ${i + 1}`);
  }
  t.is(throttle.trackedSources(T0 + 100_000), cap);
});

test("LRU: a throttled source that keeps trying stays tracked; idle ones are evicted first", (t) => {
  const throttle = new FailureThrottle({ failures: 2, windowMs: WINDOW_MS, maxSources: 3 });
  throttle.recordFailure("192.0.2.1", T0);
  throttle.recordFailure("192.0.2.1", T0);
  throttle.recordFailure("192.0.2.2", T0 + 1);
  throttle.recordFailure("192.0.2.3", T0 + 2);
  // The refused attempt touches 192.0.2.1, so 192.0.2.2 is now the oldest.
  t.true(throttle.isThrottled("192.0.2.1", T0 + 3));
  throttle.recordFailure("192.0.2.4", T0 + 4);
  t.true(throttle.isThrottled("192.0.2.1", T0 + 5));
  t.is(throttle.trackedSources(T0 + 5), 3);
});

test("LRU: closed windows are dropped and do not count as tracked", (t) => {
  const throttle = new FailureThrottle({ failures: 2, windowMs: WINDOW_MS });
  for (let i = 0; i < 50; i++) throttle.recordFailure(`192.0.2.${i}`, T0);
  // Touched last, but its window opened first: it closes first.
  throttle.recordFailure("192.0.2.0", T0 + 10);
  t.is(throttle.trackedSources(T0 + 1), 50);
  throttle.recordFailure("192.0.2.99", T0 + WINDOW_MS / 2);
  t.is(throttle.trackedSources(T0 + WINDOW_MS), 1);
  t.is(throttle.trackedSources(T0 + WINDOW_MS + WINDOW_MS / 2), 0);
});

test("settings must be positive integers", (t) => {
  t.throws(() => new FailureThrottle({ failures: 0, windowMs: WINDOW_MS }), {
    instanceOf: RangeError,
  });
  t.throws(() => new FailureThrottle({ failures: 3, windowMs: 0 }), { instanceOf: RangeError });
  t.throws(() => new FailureThrottle({ failures: 3, windowMs: 1, maxSources: 0.5 }), {
    instanceOf: RangeError,
  });
});

const PEER = "10.0.0.5";

const sourceCases: {
  name: string;
  hops: number;
  xff?: string;
  peer?: string;
  expect: string;
}[] = [
  { name: "hops 0: the peer address", hops: 0, expect: PEER },
  {
    name: "hops 0: x-forwarded-for is ignored",
    hops: 0,
    xff: "203.0.113.9, 10.0.0.5",
    expect: PEER,
  },
  {
    name: "hops 1: the entry left of the one Envoy appended",
    hops: 1,
    xff: "203.0.113.9,10.0.0.5",
    expect: "203.0.113.9",
  },
  {
    name: "hops 1: spoofed leftmost entries are never taken",
    hops: 1,
    xff: "1.1.1.1, 8.8.8.8, 203.0.113.9, 10.0.0.5",
    expect: "203.0.113.9",
  },
  {
    name: "hops 2: two trusted proxies",
    hops: 2,
    xff: "6.6.6.6, 203.0.113.9, 172.16.0.1, 10.0.0.5",
    expect: "203.0.113.9",
  },
  {
    name: "hops 2: a header shorter than the trust depth falls back to the peer",
    hops: 2,
    xff: "203.0.113.9, 10.0.0.5",
    expect: PEER,
  },
  { name: "hops 1: no header falls back to the peer", hops: 1, expect: PEER },
  {
    name: "hops 1: an empty entry falls back to the peer",
    hops: 1,
    xff: ", 10.0.0.5",
    expect: PEER,
  },
  {
    name: "hops 1: an entry that is not an address falls back to the peer",
    hops: 1,
    xff: "1.1.1.1, unknown, 10.0.0.5",
    expect: PEER,
  },
  {
    name: "hops 1: an address with a port is the address",
    hops: 1,
    xff: "203.0.113.9:51234, 10.0.0.5",
    expect: "203.0.113.9",
  },
  {
    name: "hops 1: an IPv6 client is counted by its /64",
    hops: 1,
    xff: "2001:db8:1:2:aaaa::1, 10.0.0.5",
    expect: "2001:0db8:0001:0002::/64",
  },
  {
    name: "hops 0: an IPv6 peer is counted by its /64",
    hops: 0,
    peer: "2001:db8::7",
    expect: "2001:0db8:0000:0000::/64",
  },
  {
    name: "hops 0: an IPv4-mapped IPv6 peer is its IPv4 address",
    hops: 0,
    peer: "::ffff:203.0.113.9",
    expect: "203.0.113.9",
  },
  { name: "hops 0: no peer address at all is one shared source", hops: 0, peer: "", expect: "" },
];

for (const { name, hops, xff, peer, expect } of sourceCases) {
  test(`source: ${name}`, (t) => {
    const request = checkRequest(xff === undefined ? {} : { headers: { "x-forwarded-for": xff } });
    (request.attributes as Record<string, unknown>).source = {
      address: { socket_address: { address: peer ?? PEER, port_value: 40_000 } },
    };
    t.is(sourceOf(decodeCheckRequest(serializeCheckRequest(request)), hops), expect);
  });
}

test("source: every address of one IPv6 /64 is one source, spelled any way", (t) => {
  const keys = ["2001:db8:0:1::1", "2001:DB8:0:1:ffff:ffff:ffff:ffff", "[2001:db8:0:1::9]:443"].map(
    sourceKey,
  );
  t.deepEqual(keys, Array(3).fill("2001:0db8:0000:0001::/64"));
  t.not(sourceKey("2001:db8:0:2::1"), keys[0]);
});

const failureCases: { reason: DenialReason; counts: boolean }[] = [
  { reason: "credential_unknown", counts: true },
  { reason: "credential_checksum", counts: true },
  { reason: "credential_expired", counts: true },
  { reason: "client_disabled", counts: true },
  { reason: "credential_malformed", counts: true },
  { reason: "credential_missing", counts: false },
  { reason: "route_not_allowed", counts: false },
  { reason: "model_not_allowed", counts: false },
  { reason: "conflicting_credentials", counts: false },
  { reason: "invalid_json_body", counts: false },
  { reason: "too_many_failures", counts: false },
  { reason: "key_unavailable", counts: false },
  { reason: "keystore_unavailable", counts: false },
];

for (const { reason, counts } of failureCases) {
  test(`failure: ${reason} ${counts ? "counts" : "does not count"}, denied or dry-run`, (t) => {
    t.is(countsAsFailure({ outcome: "deny", reason }), counts);
    t.is(countsAsFailure({ outcome: "allow", wouldDeny: reason }), counts);
  });
}

test("failure: an allow never counts", (t) => {
  t.false(countsAsFailure({ outcome: "allow", wouldDeny: null }));
});
