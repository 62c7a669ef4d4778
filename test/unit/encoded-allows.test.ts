import test from "ava";
import type { Decision } from "../../server/auth/decide.js";
import { EncodedAllows } from "../../server/grpc/encoded-allows.js";
import { allowDecision } from "../helpers/check-service.js";

type Allow = Extract<Decision, { outcome: "allow" }>;

const allow = allowDecision;

/** A cache and a counter of the encodings it asked for. */
function counted(): { allows: EncodedAllows; encode: () => Buffer; calls: () => number } {
  let calls = 0;
  return {
    allows: new EncodedAllows(),
    encode: () => Buffer.from(`encoding ${++calls}`),
    calls: () => calls,
  };
}

test("the same allow in the same generation is encoded once", (t) => {
  const { allows, encode, calls } = counted();
  const first = allows.get(allow(), 1, encode);
  const second = allows.get(allow(), 1, encode);
  t.is(second, first);
  t.is(calls(), 1);
});

test("a new generation encodes again: a reload may have changed the key", (t) => {
  const { allows, encode, calls } = counted();
  allows.get(allow(), 1, encode);
  allows.get(allow(), 2, encode);
  t.is(calls(), 2);
});

test("every field of the decision that reaches the response is part of the key", (t) => {
  const variants: Partial<Allow>[] = [
    {},
    { clientId: "c2" },
    { upstreamKey: "sk-other" },
    { upstreamKey: null },
    { upstreamKey: "null" },
    { authMode: "internal" },
    { wouldDeny: "budget_exhausted" },
    { forward: ["x-api-key"] },
    { forward: ["x-api-key", "bearer"] },
    { clientId: null, upstreamKey: null, authMode: "byo" },
    { clientId: "null", upstreamKey: null, authMode: "byo" },
  ];
  const { allows, encode, calls } = counted();
  const answers = variants.map((variant) => allows.get(allow(variant), 1, encode));
  t.is(calls(), variants.length);
  t.is(new Set(answers).size, variants.length);
});

test("past 10 000 distinct allows the cache starts over instead of growing", (t) => {
  const { allows, encode, calls } = counted();
  const first = allows.get(allow({ clientId: "c-0" }), 1, encode);
  for (let index = 1; index < 10_000; index++)
    allows.get(allow({ clientId: `c-${index}` }), 1, encode);
  t.is(allows.get(allow({ clientId: "c-0" }), 1, encode), first, "still held at the bound");
  allows.get(allow({ clientId: "c-10000" }), 1, encode);
  const before = calls();
  t.not(allows.get(allow({ clientId: "c-0" }), 1, encode), first);
  t.is(calls(), before + 1);
});
