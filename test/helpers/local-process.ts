/**
 * What every test and benchmark child process of keygate shares: a free loopback port
 * to give it, and an environment the developer's shell cannot change.
 */
import { createServer } from "node:net";

/**
 * A port that was free a moment ago on 127.0.0.1 (bind to 0, read it, close). Another
 * process could take it before it is used; with the kernel's ephemeral range that is rare.
 */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const address = server.address();
      const port = typeof address === "object" && address !== null ? address.port : 0;
      server.close(() => resolve(port));
    });
  });
}

/** The parent's environment minus KEYGATE_* variables, so a developer's shell cannot leak in. */
export function environmentWithoutKeygate(): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [name, value] of Object.entries(process.env)) {
    if (!name.startsWith("KEYGATE_")) env[name] = value;
  }
  return env;
}
