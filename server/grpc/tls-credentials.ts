/**
 * TLS and mutual TLS for the gRPC listener, from PEM files that are re-read when they
 * change. A CheckResponse carries provider keys in clear, so anything but loopback or a
 * unix socket wants TLS (DESIGN §13).
 *
 * New connections get the new certificate after a reload (`setSecureContext` on the
 * listener), open ones keep theirs, nothing is rebound. Only material that Node has
 * already accepted is published (`tls.createSecureContext` with the key matched against
 * the certificate): a half-written or mismatched file is logged and the credentials in
 * use are kept. The files' directories are watched (Kubernetes swaps a `..data` symlink
 * under a Secret volume) with a stat poll behind, and the content decides.
 */
import { createHash, X509Certificate } from "node:crypto";
import { readFileSync } from "node:fs";
import { isIP } from "node:net";
import { createSecureContext, type SecureContextOptions } from "node:tls";
import type { GrpcTlsFiles, ListenAddress } from "../config.js";
import { type KeystoreWatcher, watchKeystore } from "../keystore/reload/keystore-watcher.js";
import type { Logger } from "../logger.js";
import type { ServerTls } from "./grpc-server.js";

/** The PEM bytes in use: the certificate chain, its key, and for mutual TLS the client CA. */
interface TlsMaterial {
  readonly cert: Buffer;
  readonly key: Buffer;
  readonly ca: Buffer | null;
  /** SHA-256 over all three, to skip reloads that change nothing. */
  readonly digest: string;
  /** The leaf certificate, for logs (never the key). */
  readonly leaf: X509Certificate;
}

/** What the logs say about a certificate: enough to tell two apart, nothing secret. */
export interface CertificateSummary {
  readonly subject: string;
  readonly serialNumber: string;
  readonly fingerprint256: string;
  readonly validTo: string;
}

export type TlsReloadResult = "applied" | "unchanged" | "failed";

export interface TlsCredentials extends ServerTls {
  /** The certificate new connections are served. */
  certificate(): CertificateSummary;
  /** Re-reads the files now; the watcher calls it on every change. */
  reload(): TlsReloadResult;
  close(): void;
}

export interface TlsCredentialsOptions {
  readonly files: GrpcTlsFiles;
  readonly logger: Logger;
  /** Quiet time after the last file event before re-reading. */
  readonly debounceMs: number;
  /** Interval of the stat poll that backs up filesystem events. */
  readonly pollMs: number;
}

/** The files cannot be used; the message names the variable and the problem. */
export class TlsFilesError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "TlsFilesError";
  }
}

function readPem(variable: string, file: string): Buffer {
  try {
    return readFileSync(file);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code ?? "error";
    throw new TlsFilesError(`${variable}: cannot read ${file}: ${code}`);
  }
}

function firstCertificate(variable: string, file: string, pem: Buffer): X509Certificate {
  try {
    return new X509Certificate(pem);
  } catch {
    throw new TlsFilesError(`${variable}: ${file} holds no PEM certificate`);
  }
}

/**
 * Reads the three files and checks them the way the listener will use them.
 * @throws TlsFilesError naming the variable whose file is missing or unusable.
 */
function readMaterial(files: GrpcTlsFiles): TlsMaterial {
  const cert = readPem("KEYGATE_GRPC_TLS_CERT", files.certPath);
  const key = readPem("KEYGATE_GRPC_TLS_KEY", files.keyPath);
  const ca =
    files.clientCaPath === null ? null : readPem("KEYGATE_GRPC_TLS_CLIENT_CA", files.clientCaPath);
  const leaf = firstCertificate("KEYGATE_GRPC_TLS_CERT", files.certPath, cert);
  if (ca !== null && files.clientCaPath !== null)
    firstCertificate("KEYGATE_GRPC_TLS_CLIENT_CA", files.clientCaPath, ca);
  try {
    // Throws on an unparsable key or one that does not belong to the certificate.
    createSecureContext({ cert, key, ...(ca === null ? {} : { ca }) });
  } catch (error) {
    throw new TlsFilesError(
      `KEYGATE_GRPC_TLS_KEY: ${files.keyPath} cannot serve ${files.certPath}: ${(error as Error).message}`,
    );
  }
  const digest = createHash("sha256")
    .update(cert)
    .update("\0")
    .update(key)
    .update("\0")
    .update(ca ?? "")
    .digest("hex");
  return { cert, key, ca, digest, leaf };
}

function summarize(leaf: X509Certificate): CertificateSummary {
  return {
    subject: leaf.subject.replaceAll("\n", ", "),
    serialNumber: leaf.serialNumber,
    fingerprint256: leaf.fingerprint256,
    validTo: leaf.validTo,
  };
}

function contextOptions(material: TlsMaterial): SecureContextOptions {
  const { cert, key, ca } = material;
  return ca === null ? { cert, key } : { cert, key, ca };
}

/**
 * Loads the files and starts watching them.
 * @throws TlsFilesError when the files are missing or unusable at start-up (there is no
 *   older certificate to fall back on).
 */
export function openTlsCredentials(options: TlsCredentialsOptions): TlsCredentials {
  const { files, logger } = options;
  let material = readMaterial(files);
  // With a client CA the listener requests and verifies client certificates and
  // refuses connections without one.
  const mutual = files.clientCaPath !== null;
  const listeners: ((options: SecureContextOptions) => void)[] = [];

  const reload = (): TlsReloadResult => {
    let next: TlsMaterial;
    try {
      next = readMaterial(files);
    } catch (error) {
      if (!(error instanceof TlsFilesError)) throw error;
      logger.error(
        { reason: error.message, serving: summarize(material.leaf) },
        "gRPC TLS files changed but cannot be used; keeping the certificate in use",
      );
      return "failed";
    }
    if (next.digest === material.digest) return "unchanged";
    material = next;
    for (const listener of listeners) listener(contextOptions(next));
    logger.info(
      { certificate: summarize(next.leaf), mutualTls: mutual },
      "gRPC TLS certificate reloaded; new connections use it",
    );
    warnIfExpired(logger, next.leaf);
    return "applied";
  };

  const paths = [files.certPath, files.keyPath, files.clientCaPath].filter(
    (file): file is string => file !== null,
  );
  const watchers: KeystoreWatcher[] = [...new Set(paths)].map((file) =>
    watchKeystore({
      path: file,
      debounceMs: options.debounceMs,
      pollMs: options.pollMs,
      logger,
      onChange: reload,
    }),
  );
  warnIfExpired(logger, material.leaf);

  return {
    mutual,
    current: () => contextOptions(material),
    onUpdate: (listener) => listeners.push(listener),
    certificate: () => summarize(material.leaf),
    reload,
    close() {
      for (const watcher of watchers) watcher.close();
    },
  };
}

function warnIfExpired(logger: Logger, leaf: X509Certificate): void {
  if (Date.parse(leaf.validTo) < Date.now())
    logger.warn({ certificate: summarize(leaf) }, "gRPC TLS certificate has expired");
}

/** Whether a listen address can only be reached from this host. */
export function isLocalOnly(address: ListenAddress): boolean {
  if (address.kind === "unix") return true;
  const host = address.host.toLowerCase();
  if (host === "localhost" || host === "::1") return true;
  return isIP(host) === 4 && host.startsWith("127.");
}

/** Says at start-up how the gRPC listener is protected, loudly when it is not. */
export function logGrpcTransport(
  logger: Logger,
  address: ListenAddress,
  tls: TlsCredentials | null,
): void {
  if (tls !== null) {
    logger.info(
      { transport: tls.mutual ? "mtls" : "tls", certificate: tls.certificate() },
      tls.mutual
        ? "gRPC serves mutual TLS: clients must present a certificate signed by KEYGATE_GRPC_TLS_CLIENT_CA"
        : "gRPC serves TLS",
    );
    return;
  }
  if (address.kind === "unix" || isLocalOnly(address)) {
    logger.info({ transport: "plaintext" }, "gRPC serves plaintext on a local-only address");
    return;
  }
  logger.warn(
    { transport: "plaintext", host: address.host },
    "gRPC serves PLAINTEXT on a network address: CheckResponses carry provider keys in clear to anyone who can reach this port. Set KEYGATE_GRPC_TLS_CERT and KEYGATE_GRPC_TLS_KEY (and KEYGATE_GRPC_TLS_CLIENT_CA for mutual TLS), or keep the port on a network only Envoy reaches",
  );
}
