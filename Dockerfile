# syntax=docker/dockerfile:1
#
# keygate: the Envoy ext_authz server, as one image. Two stages: `build` has the
# compilers and dev dependencies, the runtime stage has only what `keygate serve` loads
# (dist/, schemas/, production node_modules, package.json) and runs as a non-root user.
#
#   docker build -t keygate .
#   docker run -v "$PWD:/etc/keygate:ro" -v keygate-data:/var/lib/keygate --network <envoy's network> keygate
#
# gRPC (9191) is never published to the host: only Envoy, on the same container network,
# calls it (see ENV below).
#
# docker-compose.yml runs it next to Envoy; `npm run stack` runs the same without Docker.

# Both stages on the same base: better-sqlite3's native module is built against this
# Node ABI and glibc, and the runtime must match them.
ARG NODE_IMAGE=node:20-bookworm-slim

# ── build ────────────────────────────────────────────────────────────────────────────
FROM ${NODE_IMAGE} AS build

# better-sqlite3 downloads a prebuilt binary where one matches the platform, and compiles
# from source with node-gyp where none does (another CPU, no network): that needs these.
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 make g++ \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /app

# Dependencies in their own layer, so a source edit does not reinstall them. The source
# is not here yet, so the package's own `prepare` (tsc) must not run: --ignore-scripts,
# then the one native build that is needed. The npm cache survives between builds.
COPY package.json package-lock.json ./
RUN --mount=type=cache,target=/root/.npm \
    npm ci --ignore-scripts --no-audit --no-fund \
 && npm rebuild better-sqlite3

COPY tsconfig.json tsconfig.build.json ./
COPY schemas ./schemas
COPY server ./server
# npm run build also compiles the schemas' validators into dist/validators.
COPY scripts/compile-validators.mjs ./scripts/
RUN npm run build \
 && npm prune --omit=dev --ignore-scripts --no-audit --no-fund

# ── runtime ──────────────────────────────────────────────────────────────────────────
FROM ${NODE_IMAGE}

ENV NODE_ENV=production
WORKDIR /app

# Code stays owned by root: the server's user can read it but not rewrite it.
COPY --from=build /app/package.json ./package.json
COPY --from=build /app/node_modules ./node_modules
COPY --from=build /app/schemas ./schemas
COPY --from=build /app/dist ./dist

# /etc/keygate: where the operator's keystore.yaml is mounted, read-only (mount the
# directory, not the file: editors and `keygate keystore ...` save by rename, which a
# single-file bind mount never shows). /var/lib/keygate: the SQLite database, the only
# place keygate writes; created here and owned by the runtime user so that a new named
# volume inherits that ownership. `node` is the unprivileged user (uid 1000) the base
# image ships: on Linux hosts it matches the usual first user, who owns keystore.yaml.
RUN mkdir -p /etc/keygate /var/lib/keygate \
 && chown node:node /var/lib/keygate \
 && chmod 0700 /var/lib/keygate

# DESIGN §3's variables. Both listeners on all interfaces of the container, unlike the
# loopback default outside it: Envoy reaches gRPC from another container on the compose
# network, Prometheus scrapes admin /metrics. A CheckResponse carries provider keys in
# clear, so never publish the gRPC port (no `docker run -p` for it, no compose `ports:`
# entry): keep it on a network only Envoy reaches, or turn on TLS / mutual TLS with
# KEYGATE_GRPC_TLS_CERT, KEYGATE_GRPC_TLS_KEY and KEYGATE_GRPC_TLS_CLIENT_CA
# (docker-compose.yml shows how).
# keygate logs a warning at start-up while it serves plaintext on such an address.
# Publish admin only to trusted networks (docker-compose.yml binds it to host loopback).
ENV KEYGATE_KEYSTORE=/etc/keygate/keystore.yaml \
    KEYGATE_DB=/var/lib/keygate/keystore.db \
    KEYGATE_GRPC_ADDR=0.0.0.0:9191 \
    KEYGATE_ADMIN_ADDR=0.0.0.0:9192

VOLUME /var/lib/keygate
EXPOSE 9191 9192

USER node

# Ready = a keystore generation is loaded (/readyz), the same condition under which the
# gRPC health service Envoy polls says SERVING. Node's fetch, because the slim image has
# no curl; the port is read from KEYGATE_ADMIN_ADDR so that overriding it keeps this right.
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
  CMD ["node", "-e", "fetch('http://127.0.0.1:' + process.env.KEYGATE_ADMIN_ADDR.split(':').pop() + '/readyz').then((r) => process.exit(r.ok ? 0 : 1), () => process.exit(1))"]

# Node as PID 1 is fine here: keygate handles SIGTERM itself (drains in-flight checks,
# exits 0) and starts no child processes. `docker kill -s HUP` reloads the keystore.
# --no-memory-reducer keeps V8 from shrinking the heap in idle spells and then running
# full collections back to back when load returns (server/node-flags.ts says why).
ENTRYPOINT ["node", "--no-memory-reducer", "dist/server/cli/main.js"]
CMD ["serve"]
