/**
 * The Node/V8 flags keygate's server is launched with: the Dockerfile's ENTRYPOINT,
 * `npm start`, `npm run stack` and the benchmark all use this list (a test checks they
 * agree). They must be on node's command line: V8 reads them when the heap is set up.
 *
 * `--no-memory-reducer`: after a few seconds without Checks, V8's memory reducer shrinks
 * the heap and leaves the old generation's limit a few MiB above what is live. When
 * load returns, every Check's short-lived objects that survive two scavenges (gRPC and
 * HTTP/2 call state, a few KiB per Check) fill that headroom within ~80 ms, so V8 runs
 * a full mark-compact 10+ times a second, and its concurrent marking threads take a
 * third of the CPU a Check needs. Measured: 75–86 full collections per 7 s window and
 * ~80 µs of CPU per Check after an idle spell, against ~20 and ~60 µs without the reducer.
 * An authorization server's load is bursty by nature, so the idle-then-busy pattern is
 * the normal case. The cost is a heap that stays at its working size between bursts:
 * at 100 000 clients the benchmark measured ~70 MiB more resident memory at rest (206
 * against 134 MiB), and the reload worker keeps its parse heap until it is retired.
 */
export const SERVER_NODE_FLAGS: readonly string[] = Object.freeze(["--no-memory-reducer"]);
