/**
 * envoy/envoy.yaml is the file users copy and docker-compose runs: Envoy itself must
 * accept it as shipped (`--mode validate` parses and instantiates everything, resolving
 * STRICT_DNS hostnames only later, so it works offline), and the address-rewritten copy
 * the e2e tests run must stay valid too.
 */
import { spawnSync } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import test from "ava";
import { ENVOY_CONFIG_PATH, renderEnvoyConfig, requireEnvoy } from "../helpers/envoy.js";

function validate(envoy: string, configPath: string): { status: number | null; output: string } {
  const result = spawnSync(
    envoy,
    ["--mode", "validate", "--config-path", configPath, "--log-level", "warn"],
    {
      encoding: "utf8",
      timeout: 30_000,
    },
  );
  return { status: result.status, output: `${result.stdout}${result.stderr}` };
}

test("envoy --mode validate accepts envoy/envoy.yaml as shipped", (t) => {
  const envoy = requireEnvoy(t);
  const { status, output } = validate(envoy, ENVOY_CONFIG_PATH);
  t.is(status, 0, output);
  t.regex(output, /configuration '.*envoy\.yaml' OK/);
});

test("envoy --mode validate accepts the config rendered for the e2e tests", (t) => {
  const envoy = requireEnvoy(t);
  const dir = mkdtempSync(path.join(tmpdir(), "keygate-envoy-validate-"));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const rendered = path.join(dir, "envoy.yaml");
  writeFileSync(
    rendered,
    renderEnvoyConfig({
      listenPort: 18080,
      adminPort: 19901,
      keygatePort: 19191,
      upstreamPort: 18000,
    }),
  );
  const { status, output } = validate(envoy, rendered);
  t.is(status, 0, output);
});
