/**
 * Every row of DESIGN §6's decision table, in each mode, as named cases over the pure
 * decide() function.
 */
import test from "ava";
import {
  type Decision,
  type DecisionInput,
  decide,
  type Lookup,
} from "../../server/auth/decide.js";
import type { BodyView, Extraction } from "../../server/auth/extract-credential.js";
import { resolvePolicy } from "../../server/auth/policy.js";
import type { Mode } from "../../server/config.js";
import { isProviderKey } from "../../server/crypto/secret-shapes.js";
import type { TokenMatch } from "../../server/keystore/format/model.js";

const NOW = Date.parse("2026-11-23T12:00:00Z");
const DIGEST = "a".repeat(64);
/** A JSON object body as the scanner reports it: only `model` and `api_key` are kept. */
function jsonBody(model?: string | "not-a-string"): BodyView {
  return {
    kind: "object",
    apiKey: { kind: "absent" },
    model:
      model === undefined
        ? { kind: "absent" }
        : model === "not-a-string"
          ? { kind: "other" }
          : { kind: "string", value: model },
  };
}
const JSON_BODY = jsonBody("claude-sonnet-4");
const UNREADABLE = { kind: "invalid-json", mayHoldCredential: false } as const;
const TRUNCATED = { kind: "truncated", mayHoldCredential: false } as const;

const client: TokenMatch = {
  generation: 1,
  clientId: "lightning-prod",
  kind: "client",
  disabled: false,
  expiresAt: null,
  upstreamKey: "env:UPSTREAM",
  upstreamKeyIsDefault: false,
  routes: null,
  models: null,
};

function token(value = "kg_token", body: BodyView = JSON_BODY): Extraction {
  return {
    kind: "token",
    token: value,
    locations: ["bearer"],
    body,
    presented: [{ location: "bearer", token: value }],
    tokenElsewhere: false,
  };
}
function found(
  match: Partial<TokenMatch> = {},
  upstream: "value" | "none" | "unavailable" = "value",
): Lookup {
  return {
    kind: "found",
    digest: DIGEST,
    match: { ...client, ...match },
    upstreamKey:
      upstream === "value" ? { kind: "value", value: "sk-ant-upstream" } : { kind: upstream },
  };
}
const unknown: Lookup = { kind: "unknown", digest: DIGEST };

interface Row {
  name: string;
  input: Partial<Omit<DecisionInput, "policy">>;
  /** What each mode answers: "allow:<auth_mode>" or "deny:<reason>". */
  expect: Record<"enforce" | "recognize", string>;
}

const rows: Row[] = [
  {
    name: "no credential",
    input: { extraction: { kind: "none", body: JSON_BODY, presented: [], tokenElsewhere: false } },
    expect: { enforce: "deny:credential_missing", recognize: "allow:anonymous" },
  },
  {
    name: "known token, enabled, not expired",
    input: { extraction: token(), lookup: found() },
    expect: { enforce: "allow:known", recognize: "allow:known" },
  },
  {
    name: "known token, expiry in the future",
    input: { extraction: token(), lookup: found({ expiresAt: NOW + 1000 }) },
    expect: { enforce: "allow:known", recognize: "allow:known" },
  },
  {
    name: "known token, route and model allowed",
    input: {
      path: "/services/chat",
      extraction: token(),
      lookup: found({ routes: ["/services/"], models: ["claude-sonnet-*"] }),
    },
    expect: { enforce: "allow:known", recognize: "allow:known" },
  },
  {
    name: "known internal client",
    input: { extraction: token(), lookup: found({ kind: "internal" }) },
    expect: { enforce: "allow:internal", recognize: "allow:internal" },
  },
  {
    name: "internal client needs no upstream key",
    input: { extraction: token(), lookup: found({ kind: "internal" }, "unavailable") },
    expect: { enforce: "allow:internal", recognize: "allow:internal" },
  },
  {
    name: "unknown provider-shaped key",
    input: { extraction: token("sk-ant-api03-abc"), lookup: unknown },
    expect: { enforce: "deny:credential_unknown", recognize: "allow:byo" },
  },
  {
    name: "unknown token otherwise",
    input: { extraction: token("kg_nope"), lookup: unknown },
    expect: { enforce: "deny:credential_unknown", recognize: "deny:credential_unknown" },
  },
  {
    name: "unknown token that merely contains sk-ant-",
    input: { extraction: token("x-sk-ant-1"), lookup: unknown },
    expect: { enforce: "deny:credential_unknown", recognize: "deny:credential_unknown" },
  },
  {
    name: "minted token with a bad checksum",
    input: { extraction: token("kg_typo"), lookup: { kind: "checksum", digest: DIGEST } },
    expect: { enforce: "deny:credential_checksum", recognize: "deny:credential_checksum" },
  },
  {
    name: "disabled client",
    input: { extraction: token(), lookup: found({ disabled: true }) },
    expect: { enforce: "deny:client_disabled", recognize: "deny:client_disabled" },
  },
  {
    name: "expired token",
    input: { extraction: token(), lookup: found({ expiresAt: NOW - 1 }) },
    expect: { enforce: "deny:credential_expired", recognize: "deny:credential_expired" },
  },
  {
    name: "token expiring exactly now",
    input: { extraction: token(), lookup: found({ expiresAt: NOW }) },
    expect: { enforce: "deny:credential_expired", recognize: "deny:credential_expired" },
  },
  {
    name: "path outside routes",
    input: { path: "/admin/users", extraction: token(), lookup: found({ routes: ["/services/"] }) },
    expect: { enforce: "deny:route_not_allowed", recognize: "deny:route_not_allowed" },
  },
  {
    name: "route prefix without a slash does not match a longer segment",
    input: { path: "/servicesevil", extraction: token(), lookup: found({ routes: ["/services"] }) },
    expect: { enforce: "deny:route_not_allowed", recognize: "deny:route_not_allowed" },
  },
  {
    name: "dot segments cannot escape a route",
    input: {
      path: "/services/../admin",
      extraction: token(),
      lookup: found({ routes: ["/services/"] }),
    },
    expect: { enforce: "deny:route_not_allowed", recognize: "deny:route_not_allowed" },
  },
  {
    name: "encoded slashes cannot escape a route",
    input: {
      path: "/services/..%2fadmin",
      extraction: token(),
      lookup: found({ routes: ["/services/"] }),
    },
    expect: { enforce: "deny:route_not_allowed", recognize: "deny:route_not_allowed" },
  },
  {
    name: "model outside models",
    input: {
      extraction: token("kg_token", jsonBody("claude-opus-4")),
      lookup: found({ models: ["claude-sonnet-*"] }),
    },
    expect: { enforce: "deny:model_not_allowed", recognize: "deny:model_not_allowed" },
  },
  {
    name: "body without a model when models are restricted",
    input: {
      extraction: token("kg_token", jsonBody()),
      lookup: found({ models: ["claude-*"] }),
    },
    expect: { enforce: "deny:model_not_allowed", recognize: "deny:model_not_allowed" },
  },
  {
    name: "non-string model when models are restricted",
    input: {
      extraction: token("kg_token", jsonBody("not-a-string")),
      lookup: found({ models: ["claude-*"] }),
    },
    expect: { enforce: "deny:model_not_allowed", recognize: "deny:model_not_allowed" },
  },
  {
    name: "glob metacharacters other than * are literal",
    input: {
      extraction: token("kg_token", jsonBody("claudeXsonnet")),
      lookup: found({ models: ["claude.sonnet"] }),
    },
    expect: { enforce: "deny:model_not_allowed", recognize: "deny:model_not_allowed" },
  },
  {
    name: "a request without a body passes a models list",
    input: {
      extraction: token("kg_token", { kind: "absent" }),
      lookup: found({ models: ["claude-*"] }),
    },
    expect: { enforce: "allow:known", recognize: "allow:known" },
  },
  {
    name: "unparsable JSON body where the body is the credential source",
    input: {
      extraction: {
        kind: "invalid",
        reason: "invalid_json_body",
        body: UNREADABLE,
        presented: [],
        tokenElsewhere: false,
      },
    },
    expect: { enforce: "deny:invalid_json_body", recognize: "deny:invalid_json_body" },
  },
  {
    name: "unparsable JSON body when the model must be checked",
    input: {
      extraction: token("kg_token", UNREADABLE),
      lookup: found({ models: ["claude-*"] }),
    },
    expect: { enforce: "deny:invalid_json_body", recognize: "deny:invalid_json_body" },
  },
  {
    name: "two different credentials",
    input: {
      extraction: {
        kind: "invalid",
        reason: "conflicting_credentials",
        body: JSON_BODY,
        presented: [],
        tokenElsewhere: false,
      },
    },
    expect: { enforce: "deny:conflicting_credentials", recognize: "deny:conflicting_credentials" },
  },
  {
    name: "malformed Basic credential",
    input: {
      extraction: {
        kind: "invalid",
        reason: "credential_malformed",
        body: JSON_BODY,
        presented: [{ location: "basic", token: null, problem: "credential_malformed" }],
        tokenElsewhere: false,
      },
    },
    expect: { enforce: "deny:credential_malformed", recognize: "deny:credential_malformed" },
  },
  {
    name: "body truncated and no credential",
    input: {
      bodyTruncated: true,
      extraction: { kind: "none", body: TRUNCATED, presented: [], tokenElsewhere: false },
    },
    expect: { enforce: "deny:body_truncated", recognize: "deny:body_truncated" },
  },
  {
    name: "body truncated but a header credential",
    input: {
      bodyTruncated: true,
      extraction: token("kg_token", TRUNCATED),
      lookup: found(),
    },
    expect: { enforce: "allow:known", recognize: "allow:known" },
  },
  {
    name: "body truncated and the model must be checked",
    input: {
      bodyTruncated: true,
      extraction: token("kg_token", TRUNCATED),
      lookup: found({ models: ["claude-*"] }),
    },
    expect: { enforce: "deny:body_truncated", recognize: "deny:body_truncated" },
  },
  {
    name: "upstream key cannot be resolved",
    input: { extraction: token(), lookup: found({}, "unavailable") },
    expect: { enforce: "deny:key_unavailable", recognize: "deny:key_unavailable" },
  },
  {
    name: "keystore never loaded",
    input: { generation: null, extraction: token(), lookup: { kind: "skipped" } },
    expect: { enforce: "deny:keystore_unavailable", recognize: "deny:keystore_unavailable" },
  },
];

function run(mode: Mode, input: Row["input"]): Decision {
  return decide({
    policy: resolvePolicy(mode, {}),
    generation: 1,
    path: "/v1/messages",
    bodyTruncated: false,
    extraction: { kind: "none", body: JSON_BODY, presented: [], tokenElsewhere: false },
    lookup: { kind: "skipped" },
    now: NOW,
    ...input,
  });
}

function label(decision: Decision): string {
  return decision.outcome === "allow" ? `allow:${decision.authMode}` : `deny:${decision.reason}`;
}

for (const row of rows) {
  test(`enforce: ${row.name}`, (t) => t.is(label(run("enforce", row.input)), row.expect.enforce));
  test(`recognize: ${row.name}`, (t) =>
    t.is(label(run("recognize", row.input)), row.expect.recognize));
  test(`dry-run: ${row.name} decides as enforce and lets denials through without a keygate token`, (t) => {
    const decision = run("dry-run", row.input);
    const enforced = run("enforce", row.input);
    if (unreadableBody(row.input) && enforced.outcome === "deny") {
      t.like(decision, { outcome: "deny", reason: "credential_unreadable" });
    } else if (enforced.outcome === "deny") {
      t.is(decision.outcome, "allow");
      if (decision.outcome !== "allow") return;
      t.is(decision.wouldDeny, enforced.reason);
      t.is(decision.clientId, null);
      t.is(decision.upstreamKey, null);
      t.deepEqual(decision.forward, headersToForward(row.input));
    } else {
      t.deepEqual(decision, enforced);
    }
  });
  test(`off: ${row.name} is allowed with nothing but provider keys forwarded`, (t) => {
    if (unreadableBody(row.input)) {
      t.like(run("off", row.input), { outcome: "deny", reason: "credential_unreadable" });
      return;
    }
    t.like(run("off", row.input), {
      outcome: "allow",
      authMode: "anonymous",
      clientId: null,
      upstreamKey: null,
      forward: headersToForward(row.input),
      wouldDeny: null,
    });
  });
}

/** A malformed JSON object body: what passes refuse rather than forward unread. */
function unreadableBody(input: Row["input"]): boolean {
  return input.extraction?.body.kind === "invalid-json";
}

/** The credential headers a pass forwards: provider keys, as x-api-key or Bearer. */
function headersToForward(input: Row["input"]): string[] {
  return (input.extraction?.presented ?? [])
    .filter((found) => found.token !== null && isProviderKey(found.token))
    .filter((found) => found.location === "bearer" || found.location === "x-api-key")
    .map((found) => found.location);
}

test("a swap carries the client's upstream key and forwards no credential header", (t) => {
  const decision = run("enforce", { extraction: token(), lookup: found() });
  t.like(decision, {
    outcome: "allow",
    clientId: "lightning-prod",
    upstreamKey: "sk-ant-upstream",
    forward: [],
  });
});

test("a client without an upstream key is allowed with no key set and no credential forwarded", (t) => {
  const decision = run("enforce", { extraction: token(), lookup: found({}, "none") });
  t.like(decision, { outcome: "allow", authMode: "known", upstreamKey: null, forward: [] });
});

test("a pass refuses a keygate token anywhere no credential belongs; an authenticated allow does not care", (t) => {
  const elsewhere = (extraction: Extraction): Extraction => ({
    ...extraction,
    tokenElsewhere: true,
  });
  const none: Extraction = { kind: "none", body: JSON_BODY, presented: [], tokenElsewhere: false };
  for (const mode of ["recognize", "dry-run", "off"] as const)
    t.like(run(mode, { extraction: elsewhere(none) }), {
      outcome: "deny",
      reason: "credential_unreadable",
    });
  t.like(run("recognize", { extraction: elsewhere(token()), lookup: found() }), {
    outcome: "allow",
    authMode: "known",
  });
});

test("denials of a known client name the client for the logs", (t) => {
  t.like(run("enforce", { extraction: token(), lookup: found({ disabled: true }) }), {
    clientId: "lightning-prod",
  });
});

test("a route's keygate_mode overrides the default; an unknown one enforces", (t) => {
  t.is(resolvePolicy("enforce", { keygate_mode: "recognize" }).mode, "recognize");
  t.is(resolvePolicy("off", { keygate_mode: "enforce" }).mode, "enforce");
  const typo = resolvePolicy("recognize", { keygate_mode: "recognise" });
  t.is(typo.mode, "enforce");
  t.regex(typo.misconfigured ?? "", /recognise/);
});

test("a route's keygate_credential selects the source; an unknown one uses any", (t) => {
  t.is(resolvePolicy("enforce", { keygate_credential: "body" }).source, "body");
  t.is(resolvePolicy("enforce", { keygate_credential: "header" }).source, "header");
  t.is(resolvePolicy("enforce", { keygate_credential: "cookie" }).source, "any");
});
