/**
 * CPU profiles of keygate and the floor under the same Check load, to say where
 * keygate's extra cost per Check goes (not part of `npm run bench`; run it when the
 * check section's gap needs explaining):
 *   node --import tsx bench/profile-servers.ts [durationMs] [clients] [floor|keygate|both]
 * `clients` sizes keygate's keystore (default 5); the load cycles through up to 256 of them.
 * Both servers run with --cpu-prof; self time is grouped by module and by function and
 * printed as µs per Check.
 */
import { mkdtempSync, readdirSync, readFileSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { generateKeystore } from "./keystore-fixture.js";
import {
  buildForBench,
  clockTicks,
  runLoad,
  startFloorChild,
  startKeygateChild,
} from "./processes.js";
import { round } from "./stats.js";
import { encodeCheck, type WorkloadRequest } from "./workload.js";

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  children?: number[];
}
interface CpuProfile {
  nodes: ProfileNode[];
  samples: number[];
  timeDeltas: number[];
}

const TOP_FUNCTIONS = 25;
const SAMPLED_CLIENTS = 256;

function shortUrl(url: string): string {
  return url
    .replace(/^file:\/\//, "")
    .replace(/.*\/node_modules\//, "")
    .replace(/.*\/bench\/\.build\//, "");
}

/** Module bucket for a frame: the package, keygate's folder, node internals, or a VM pseudo-frame. */
function bucketOf(frame: ProfileNode["callFrame"]): string {
  const url = shortUrl(frame.url);
  if (url === "")
    return frame.functionName.startsWith("(") ? frame.functionName : "(native/builtin)";
  if (url.startsWith("node:")) return url.split("/").slice(0, 2).join("/");
  if (url.startsWith("@")) return url.split("/").slice(0, 2).join("/");
  if (url.startsWith("server/") || url.startsWith("bench/"))
    return url.split("/").slice(0, 2).join("/");
  return url.split("/")[0] ?? url;
}

function selfTimes(profile: CpuProfile): Map<number, number> {
  const times = new Map<number, number>();
  profile.samples.forEach((id, index) => {
    times.set(id, (times.get(id) ?? 0) + (profile.timeDeltas[index] ?? 0));
  });
  return times;
}

function summarize(label: string, file: string, checks: number): void {
  const profile = JSON.parse(readFileSync(file, "utf8")) as CpuProfile;
  const nodes = new Map(profile.nodes.map((node) => [node.id, node]));
  const byBucket = new Map<string, number>();
  const byFunction = new Map<string, number>();
  let busy = 0;
  for (const [id, micros] of selfTimes(profile)) {
    const node = nodes.get(id);
    if (!node) continue;
    const frame = node.callFrame;
    if (frame.functionName === "(idle)") continue;
    busy += micros;
    const bucket = bucketOf(frame);
    byBucket.set(bucket, (byBucket.get(bucket) ?? 0) + micros);
    const name = `${frame.functionName || "(anonymous)"} ${shortUrl(frame.url)}:${frame.lineNumber + 1}`;
    byFunction.set(name, (byFunction.get(name) ?? 0) + micros);
  }
  const perCheck = (micros: number) =>
    round(micros / checks, 2)
      .toFixed(2)
      .padStart(8);
  process.stdout.write(
    `\n== ${label}: ${checks} checks profiled, ${perCheck(busy)} µs busy per check (profiler overhead included) ==\n`,
  );
  for (const [bucket, micros] of [...byBucket].sort((a, b) => b[1] - a[1]).slice(0, 20)) {
    process.stdout.write(`${perCheck(micros)} µs/check  ${bucket}\n`);
  }
  process.stdout.write("-- functions (self time)\n");
  for (const [name, micros] of [...byFunction]
    .sort((a, b) => b[1] - a[1])
    .slice(0, TOP_FUNCTIONS)) {
    process.stdout.write(`${perCheck(micros)} µs/check  ${name}\n`);
  }
}

/** The main thread's profile: the largest one (the reload worker writes its own, smaller). */
function mainThreadProfile(dir: string): string {
  const files = readdirSync(dir)
    .filter((name) => name.endsWith(".cpuprofile"))
    .map((name) => path.join(dir, name));
  const file = files.sort((a, b) => statSync(b).size - statSync(a).size)[0];
  if (!file) throw new Error(`no CPU profile written in ${dir}`);
  return file;
}

async function main(): Promise<void> {
  const durationMs = Number(process.argv[2] ?? 6000);
  const clients = Number(process.argv[3] ?? 5);
  const which = process.argv[4] ?? "both";
  buildForBench();
  const fixture = generateKeystore(clients, "profile");
  const step = Math.max(1, Math.floor(clients / SAMPLED_CLIENTS));
  const sampled = fixture.clients
    .filter((_, index) => index % step === 0)
    .slice(0, SAMPLED_CLIENTS);
  const requests: WorkloadRequest[] = sampled.map((client, index) => ({
    framedBase64: encodeCheck(client.token, `profile-${index}`).toString("base64"),
    expect: { clientId: client.id, upstreamKey: client.upstreamKey },
  }));
  const ticks = clockTicks();
  const sides = (["floor", "keygate"] as const).filter(
    (side) => which === "both" || which === side,
  );
  for (const side of sides) {
    const profileDir = mkdtempSync(path.join(tmpdir(), `keygate-bench-prof-${side}-`));
    const nodeArgs = ["--cpu-prof", `--cpu-prof-dir=${profileDir}`];
    const server =
      side === "floor"
        ? await startFloorChild(nodeArgs)
        : await startKeygateChild({
            keystorePath: fixture.keystorePath,
            dbPath: fixture.dbPath,
            masterKey: fixture.masterKeySpec,
            logLevel: "warn",
            nodeArgs,
          });
    let checks = 0;
    try {
      const result = await runLoad(
        {
          port: server.grpcPort,
          sessions: 2,
          inflightPerSession: 8,
          warmupMs: 0,
          durationMs,
          maxCalls: 2_000_000,
          requests: side === "floor" ? requests.map((r) => ({ ...r, expect: null })) : requests,
          serverPid: server.pid,
          clockTicks: ticks,
        },
        path.join(fixture.dir, "load-spec.json"),
      );
      // The profile covers the whole process life; count every call the load made.
      checks = result.calls;
    } finally {
      await server.stop();
    }
    summarize(side, mainThreadProfile(profileDir), checks);
  }
}

main().then(
  () => process.exit(0),
  (error: unknown) => {
    process.stderr.write(`profile-servers: ${(error as Error).stack ?? String(error)}\n`);
    process.exit(1);
  },
);
