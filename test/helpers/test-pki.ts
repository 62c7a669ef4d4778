/**
 * A throw-away PKI for TLS tests, made with the `openssl` CLI at test time (nothing is
 * committed): a CA, then server and client certificates it signs. Keys are P-256, valid
 * for a day, and live in the directory the caller gives.
 */
import { execFileSync } from "node:child_process";
import { randomBytes, X509Certificate } from "node:crypto";
import { readFileSync, writeFileSync } from "node:fs";
import path from "node:path";

export interface Pem {
  readonly certPath: string;
  readonly keyPath: string;
}

export interface IssuedCertificate extends Pem {
  /** Colon-separated upper-case SHA-256, as Node's X509Certificate and getPeerCertificate give it. */
  readonly fingerprint256: string;
  readonly serialNumber: string;
}

const OPENSSL = process.env.OPENSSL_BIN ?? "openssl";
const KEY_ARGS = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];

function openssl(args: readonly string[]): void {
  execFileSync(OPENSSL, args, { stdio: ["ignore", "ignore", "pipe"] });
}

function describe(pem: Pem): IssuedCertificate {
  const cert = new X509Certificate(readFileSync(pem.certPath));
  return { ...pem, fingerprint256: cert.fingerprint256, serialNumber: cert.serialNumber };
}

/** A self-signed CA named `name`, written as `<name>.crt` / `<name>.key` in dir. */
export function makeCa(dir: string, name: string): IssuedCertificate {
  const pem = { certPath: path.join(dir, `${name}.crt`), keyPath: path.join(dir, `${name}.key`) };
  openssl([
    "req",
    "-x509",
    ...KEY_ARGS,
    "-keyout",
    pem.keyPath,
    "-out",
    pem.certPath,
    "-days",
    "1",
    "-subj",
    `/CN=${name}`,
    "-addext",
    "basicConstraints=critical,CA:TRUE",
    "-addext",
    "keyUsage=critical,keyCertSign,cRLSign",
  ]);
  return describe(pem);
}

/**
 * A certificate for `name` signed by `ca`: a server one (for 127.0.0.1 and localhost, plus
 * `dnsNames`) or a client one.
 */
export function issue(
  dir: string,
  ca: Pem,
  name: string,
  role: "server" | "client",
  dnsNames: readonly string[] = [],
): IssuedCertificate {
  const pem = { certPath: path.join(dir, `${name}.crt`), keyPath: path.join(dir, `${name}.key`) };
  const csr = path.join(dir, `${name}.csr`);
  const extensions = path.join(dir, `${name}.ext`);
  const names = ["DNS:localhost", "IP:127.0.0.1", ...dnsNames.map((dns) => `DNS:${dns}`)];
  writeFileSync(
    extensions,
    [
      "basicConstraints=critical,CA:FALSE",
      "keyUsage=critical,digitalSignature",
      `extendedKeyUsage=${role === "server" ? "serverAuth" : "clientAuth"}`,
      ...(role === "server" ? [`subjectAltName=${names.join(",")}`] : []),
      "",
    ].join("\n"),
  );
  openssl(["req", ...KEY_ARGS, "-keyout", pem.keyPath, "-out", csr, "-subj", `/CN=${name}`]);
  openssl([
    "x509",
    "-req",
    "-in",
    csr,
    "-CA",
    ca.certPath,
    "-CAkey",
    ca.keyPath,
    // A random serial each time, so two certificates for one name differ.
    "-set_serial",
    `0x${randomBytes(8).toString("hex")}`,
    "-out",
    pem.certPath,
    "-days",
    "1",
    "-extfile",
    extensions,
  ]);
  return describe(pem);
}
