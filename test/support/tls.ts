/**
 * A throwaway CA and a server certificate (SANs localhost, 127.0.0.1, ::1) made with openssl per
 * test run, so HTTP/2 mocks speak real TLS and clients trust them only through an explicit CA.
 * Also client certificates signed by the same CA, for APNS certificate auth.
 */
import { execFileSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { testTempDir } from './temp-dir.ts';

export interface TestPki {
  dir: string;
  caFile: string;
  ca: string;
  serverCert: string;
  serverKey: string;
  /** Issues a client certificate signed by the CA; returns PEM paths and contents. */
  clientCertificate(name: string, options?: { passphrase?: string }): { certFile: string; keyFile: string; cert: string; key: string; p12File: string };
}

function openssl(args: string[], cwd: string): void {
  execFileSync('openssl', args, { cwd, stdio: ['ignore', 'ignore', 'pipe'] });
}

let cached: TestPki | undefined;

export function testPki(): TestPki {
  if (cached) return cached;
  const dir = testTempDir('push-appserver-pki-');
  openssl(['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-days', '2',
    '-subj', '/CN=push-appserver test CA', '-keyout', 'ca.key', '-out', 'ca.pem'], dir);
  writeFileSync(join(dir, 'server.ext'), 'subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1\nextendedKeyUsage=serverAuth\n');
  openssl(['req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-subj', '/CN=localhost',
    '-keyout', 'server.key', '-out', 'server.csr'], dir);
  openssl(['x509', '-req', '-in', 'server.csr', '-CA', 'ca.pem', '-CAkey', 'ca.key', '-CAcreateserial', '-days', '2',
    '-extfile', 'server.ext', '-out', 'server.pem'], dir);
  const read = (file: string) => readFileSync(join(dir, file), 'utf8');
  cached = {
    dir,
    caFile: join(dir, 'ca.pem'),
    ca: read('ca.pem'),
    serverCert: read('server.pem'),
    serverKey: read('server.key'),
    clientCertificate(name, options = {}) {
      writeFileSync(join(dir, `${name}.ext`), 'extendedKeyUsage=clientAuth\n');
      openssl(['req', '-newkey', 'rsa:2048', '-nodes', '-subj', `/CN=${name}`, '-keyout', `${name}.plain.key`, '-out', `${name}.csr`], dir);
      openssl(['x509', '-req', '-in', `${name}.csr`, '-CA', 'ca.pem', '-CAkey', 'ca.key', '-CAcreateserial', '-days', '2',
        '-extfile', `${name}.ext`, '-out', `${name}.pem`], dir);
      if (options.passphrase) {
        openssl(['pkey', '-in', `${name}.plain.key`, '-aes256', '-passout', `pass:${options.passphrase}`, '-out', `${name}.key`], dir);
      } else {
        openssl(['pkey', '-in', `${name}.plain.key`, '-out', `${name}.key`], dir);
      }
      openssl(['pkcs12', '-export', '-in', `${name}.pem`, '-inkey', `${name}.plain.key`, '-passout', `pass:${options.passphrase ?? ''}`, '-out', `${name}.p12`], dir);
      return { certFile: join(dir, `${name}.pem`), keyFile: join(dir, `${name}.key`), cert: read(`${name}.pem`), key: read(`${name}.key`), p12File: join(dir, `${name}.p12`) };
    },
  };
  return cached;
}
