/**
 * When the credentials of certificate-based APNS apps stop working (the client certificate's
 * notAfter), read once at start from the files the app's table names, so operators can alert
 * weeks before Apple refuses the certificate. Token-based apps (.p8 keys) do not expire.
 */
import { readFileSync } from 'node:fs';
import { X509Certificate } from 'node:crypto';
import { createSecureContext, TLSSocket } from 'node:tls';
import type { Config } from '../config/schema.ts';

export interface CredentialsExpiry {
  app: string;
  /** The file the certificate came from (shown to the admin only). */
  file: string;
  /** notAfter, ms since the epoch. */
  expiresAt: number;
}

function pemCertificateExpiry(pem: string): number {
  return new X509Certificate(pem).validToDate.getTime();
}

/** PKCS#12 is not readable by X509Certificate: let TLS open it and ask for the local certificate. */
function pkcs12CertificateExpiry(pfx: Buffer, passphrase: string | undefined): number | undefined {
  const socket = new TLSSocket(null as never, { secureContext: createSecureContext({ pfx, passphrase }) });
  try {
    const certificate = socket.getCertificate();
    if (!certificate || !('valid_to' in certificate)) return undefined;
    return new Date(certificate.valid_to).getTime();
  } finally {
    socket.destroy();
  }
}

export function apnsCertificateExpiries(config: Config): CredentialsExpiry[] {
  const found: CredentialsExpiry[] = [];
  for (const app of config.apps.values()) {
    if (app.provider !== 'apns') continue;
    const table = app.settings.table;
    const passphrase = typeof table.passphrase === 'string' ? table.passphrase : undefined;
    try {
      if (typeof table.cert_file === 'string') {
        found.push({ app: app.name, file: table.cert_file, expiresAt: pemCertificateExpiry(readFileSync(table.cert_file, 'utf8')) });
      } else if (typeof table.p12_file === 'string') {
        const expiresAt = pkcs12CertificateExpiry(readFileSync(table.p12_file), passphrase);
        if (expiresAt !== undefined) found.push({ app: app.name, file: table.p12_file, expiresAt });
      }
    } catch {
      // check-config and the provider report unreadable files; an expiry we cannot read is no metric.
    }
  }
  return found;
}
