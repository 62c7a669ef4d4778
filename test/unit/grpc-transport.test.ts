/**
 * Which gRPC listen addresses keygate treats as reachable from this host only: on any
 * other, plaintext gets a start-up warning (a CheckResponse carries provider keys).
 */
import test from "ava";
import type { ListenAddress } from "../../server/config.js";
import { isLocalOnly } from "../../server/grpc/tls-credentials.js";

const tcp = (host: string): ListenAddress => ({ kind: "tcp", host, port: 9191 });

const CASES: ReadonlyArray<readonly [string, ListenAddress, boolean]> = [
  ["IPv4 loopback", tcp("127.0.0.1"), true],
  ["anywhere in 127/8", tcp("127.10.0.1"), true],
  ["IPv6 loopback", tcp("::1"), true],
  ["localhost", tcp("localhost"), true],
  ["a unix socket", { kind: "unix", path: "/run/keygate.sock" }, true],
  ["all IPv4 interfaces", tcp("0.0.0.0"), false],
  ["all IPv6 interfaces", tcp("::"), false],
  ["a private address", tcp("10.0.0.5"), false],
  ["a host name", tcp("keygate"), false],
  ["a name that only starts like loopback", tcp("127.example.com"), false],
];

for (const [name, address, local] of CASES) {
  test(`${name} is ${local ? "" : "not "}local-only`, (t) => {
    t.is(isLocalOnly(address), local);
  });
}
