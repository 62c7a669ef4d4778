/**
 * The body scanner against the reference: for every document JSON.parse accepts, the
 * top-level api_key and model it reads are JSON.parse's; hostile shapes stay cheap; the
 * encodings Python's json.loads detects are decoded the same way.
 */
import test from "ava";
import fc from "fast-check";
import {
  detectEncoding,
  MAX_FIELD_BYTES,
  MAX_TOP_LEVEL_KEYS,
  mentionsCredential,
  scanJson,
  type TopLevelField,
  utf8JsonBytes,
} from "../../server/auth/read-json-body.js";

function expectedField(value: Record<string, unknown>, key: string): TopLevelField {
  if (!Object.hasOwn(value, key)) return { kind: "absent" };
  const field = value[key];
  if (field === null) return { kind: "null" };
  return typeof field === "string" ? { kind: "string", value: field } : { kind: "other" };
}

function scanText(text: string) {
  return scanJson(Buffer.from(text, "utf8"));
}

const field = fc.oneof(
  fc.string(),
  fc.string({ unit: "binary" }),
  fc.constantFrom("kg_abc", "sk-ant-x", 'a"b\\c\u0000\u2028'),
  fc.jsonValue(),
);
const objectWithFields = fc
  .tuple(
    fc.dictionary(fc.string(), fc.jsonValue(), { maxKeys: 6 }),
    fc.option(field),
    fc.option(field),
  )
  .map(([rest, apiKey, model]) => {
    const value: Record<string, unknown> = { ...rest };
    if (apiKey !== null) value.api_key = apiKey;
    if (model !== null) value.model = model;
    return value;
  });

test("reads the top-level api_key and model exactly as JSON.parse does", (t) => {
  fc.assert(
    fc.property(objectWithFields, fc.constantFrom(undefined, 2, "\t"), (value, indent) => {
      const text = JSON.stringify(value, null, indent);
      const scan = scanText(text);
      const parsed = JSON.parse(text) as Record<string, unknown>;
      return (
        scan.kind === "object" &&
        JSON.stringify(scan.apiKey) === JSON.stringify(expectedField(parsed, "api_key")) &&
        JSON.stringify(scan.model) === JSON.stringify(expectedField(parsed, "model"))
      );
    }),
    { numRuns: 500 },
  );
  t.pass();
});

test("documents that are not objects are 'other'", (t) => {
  fc.assert(
    fc.property(fc.jsonValue(), (value) => {
      fc.pre(typeof value !== "object" || value === null || Array.isArray(value));
      return scanText(JSON.stringify(value)).kind === "other";
    }),
  );
  t.pass();
});

test("never throws on arbitrary bytes; a malformed top level is invalid", (t) => {
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 200 }), (bytes) => {
      scanJson(bytes);
      return true;
    }),
  );
  for (const text of [
    "{api_key:'kg_x'}",
    '{"a" 1}',
    '{"a":1,}',
    '{"a":1 "api_key":"kg_x"}',
    '{"a":tru}',
    '{"a":1',
    '{"a":"1}',
    '{"a":1}x',
    '{"a":[}',
    '{"api_key":kg_x}',
    '{"api_key":"a" "b"}',
    '{"model":01}',
  ]) {
    t.is(scanText(text).kind, "invalid", text);
  }
});

test("a top level with more keys than any LLM request is not read", (t) => {
  const fields = (n: number) =>
    `{${Array.from({ length: n }, (_, i) => `"k${i}":0`).join(",")},"api_key":"kg_x"}`;
  t.like(scanText(fields(MAX_TOP_LEVEL_KEYS - 1)), { kind: "object", apiKey: { value: "kg_x" } });
  t.is(scanText(fields(MAX_TOP_LEVEL_KEYS)).kind, "invalid");
});

test("a read value longer than any token or model name is 'other', not decoded", (t) => {
  const long = "k".repeat(MAX_FIELD_BYTES);
  t.like(scanText(`{"api_key":"${long}"}`), { apiKey: { kind: "other" } });
  t.like(scanText(`{"model":"${long.slice(2)}"}`), { model: { kind: "string" } });
});

test("the last of duplicate keys wins, as in Python and JavaScript", (t) => {
  t.deepEqual(scanText('{"api_key":"first","api_key":"second"}'), {
    kind: "object",
    apiKey: { kind: "string", value: "second" },
    model: { kind: "absent" },
  });
});

test("escaped keys and values are decoded", (t) => {
  const scan = scanText('{"api\\u005fkey":"kg\\u005fabc","\\u006dodel":"m\\"x"}');
  t.deepEqual(scan, {
    kind: "object",
    apiKey: { kind: "string", value: "kg_abc" },
    model: { kind: "string", value: 'm"x' },
  });
});

test("nested api_key fields are content, not credentials", (t) => {
  t.deepEqual(scanText('{"messages":[{"api_key":"kg_x","content":"]}\\"{"}],"model":"m"}'), {
    kind: "object",
    apiKey: { kind: "absent" },
    model: { kind: "string", value: "m" },
  });
});

test("Python's NaN and Infinity are accepted; an invalid escape in a read field is not", (t) => {
  t.is(scanText('{"a":NaN,"b":-Infinity,"api_key":"kg_x"}').kind, "object");
  t.deepEqual(scanText('{"api_key":NaN}'), {
    kind: "object",
    apiKey: { kind: "other" },
    model: { kind: "absent" },
  });
  t.is(scanText('{"api_key":"\\x"}').kind, "invalid");
});

test("nesting is followed to any depth: there is no limit to disagree with the upstream's about", (t) => {
  const deep = (n: number) => `{"a":${"[".repeat(n)}${"]".repeat(n)},"api_key":"kg_x"}`;
  t.like(scanText(deep(100_000)), { kind: "object", apiKey: { value: "kg_x" } });
  t.is(scanText(`{"a":${"[".repeat(1000)}${"]".repeat(999)}}`).kind, "invalid");
});

test("encodings are detected as Python's json.detect_encoding does, and decoded", (t) => {
  const text = '{"api_key":"kg_\u00e9x"}';
  const utf16be = Buffer.from(text, "utf16le").swap16();
  const utf32 = (littleEndian: boolean, bom: boolean) => {
    const points = [...(bom ? "\ufeff" : ""), ...text].map((c) => c.codePointAt(0) ?? 0);
    const out = Buffer.alloc(points.length * 4);
    for (const [i, p] of points.entries()) {
      if (littleEndian) out.writeUInt32LE(p, i * 4);
      else out.writeUInt32BE(p, i * 4);
    }
    return out;
  };
  const cases: [ReturnType<typeof detectEncoding>, Buffer][] = [
    ["utf-8", Buffer.from(text)],
    ["utf-8", Buffer.concat([Buffer.from([0xef, 0xbb, 0xbf]), Buffer.from(text)])],
    ["utf-16le", Buffer.from(text, "utf16le")],
    ["utf-16le", Buffer.concat([Buffer.from([0xff, 0xfe]), Buffer.from(text, "utf16le")])],
    ["utf-16be", utf16be],
    ["utf-16be", Buffer.concat([Buffer.from([0xfe, 0xff]), utf16be])],
    ["utf-32le", utf32(true, false)],
    ["utf-32le", utf32(true, true)],
    ["utf-32be", utf32(false, false)],
    ["utf-32be", utf32(false, true)],
  ];
  for (const [encoding, bytes] of cases) {
    t.is(detectEncoding(bytes), encoding);
    const utf8 = utf8JsonBytes(bytes);
    t.truthy(utf8, encoding);
    t.deepEqual(scanJson(utf8 as Uint8Array), {
      kind: "object",
      apiKey: { kind: "string", value: "kg_\u00e9x" },
      model: { kind: "absent" },
    });
    t.true(mentionsCredential(utf8 as Buffer), encoding);
  }
});

test("credential marks are found in bodies keygate cannot parse", (t) => {
  for (const body of ["api_key=kg_x", "x=1&api_key=y", "--b\r\nkg_abc"]) {
    t.true(mentionsCredential(Buffer.from(body)), body);
  }
  t.false(mentionsCredential(Buffer.from("model=claude&prompt=hello")));
  // Letters and _ are never percent-encoded by a form encoder, and the upstream reads JSON.
  t.false(mentionsCredential(Buffer.from("%61pi%5Fkey=x")));
});
