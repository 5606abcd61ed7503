/**
 * The `[apps.NAME]` table of an app with `provider = "apns"`, read and checked once at start (and by
 * check-config): key files are read and loaded here so a wrong path or passphrase fails before any push.
 *
 * References: Apple, "Sending notification requests to APNs" (hosts api.push.apple.com and
 * api.sandbox.push.apple.com, port 443) and "Establishing a token-based connection to APNs" /
 * "Establishing a certificate-based connection to APNs" (.p8 ES256 key with key id and team id;
 * TLS client certificate).
 */
import { createSecureContext, rootCertificates } from 'node:tls';
import type { KeyObject } from 'node:crypto';
import type { TableReader } from '../../config/reader.ts';
import { loadPrivateKey } from '../jwt.ts';

export const APNS_PRODUCTION_ORIGIN = 'https://api.push.apple.com';
export const APNS_SANDBOX_ORIGIN = 'https://api.sandbox.push.apple.com';
const DEFAULT_REQUEST_TIMEOUT_MS = 10_000;
const MAX_CONNECTIONS = 32;
/** Apple: apns-collapse-id must not exceed 64 bytes. */
const MAX_COLLAPSE_ID_BYTES = 64;
/** 30 days: Apple stores a notification for a limited time anyway; a larger ttl is almost surely a typo. */
const MAX_TTL_S = 30 * 24 * 3600;

export type ApnsPushType = 'alert' | 'voip' | 'background';
export type ApnsPriority = 'high' | 'silent' | 'auto';

export type ApnsAuth =
  | { kind: 'token'; key: KeyObject; keyId: string; teamId: string }
  | { kind: 'certificate'; cert?: string; key?: string; pfx?: Buffer; passphrase?: string; subject: string };

export interface ApnsConfig {
  topic: string;
  environment: 'production' | 'sandbox';
  /** `https://host[:port]`: Apple's host for the environment unless `endpoint` overrides it. */
  origin: string;
  /** Trusted CAs when `ca_file` is set: the built-in roots plus that file. Undefined → Node's defaults. */
  ca: string[] | undefined;
  auth: ApnsAuth;
  pushType: ApnsPushType;
  priority: ApnsPriority;
  mutableContent: boolean;
  alertText: string;
  includeBody: boolean;
  sound: string | undefined;
  ttlSeconds: number | undefined;
  collapseId: string | undefined;
  badge: boolean;
  connections: number;
  requestTimeoutMs: number;
}

const APPLE_ID = /^[A-Za-z0-9]+$/;

function readTokenAuth(settings: TableReader): ApnsAuth {
  const keyFile = settings.nonEmptyString('key_file');
  const keyId = settings.nonEmptyString('key_id');
  const teamId = settings.nonEmptyString('team_id');
  if (!APPLE_ID.test(keyId)) settings.fail('key_id', `must be the key's identifier from the developer account (letters and digits, e.g. "ABC123DEFG"), got "${keyId}"`);
  if (!APPLE_ID.test(teamId)) settings.fail('team_id', `must be the team identifier (letters and digits, e.g. "DEF123GHIJ"), got "${teamId}"`);
  const pem = settings.fileContents('key_file', keyFile);
  let key: KeyObject;
  try {
    key = loadPrivateKey(pem);
  } catch (error) {
    settings.fail('key_file', `"${keyFile}" is not a PEM private key (an APNS .p8 auth key is expected): ${(error as Error).message}`);
  }
  if (key.asymmetricKeyType !== 'ec' || key.asymmetricKeyDetails?.namedCurve !== 'prime256v1') {
    settings.fail('key_file', `"${keyFile}" must hold an EC P-256 key (an APNS .p8 auth key), got ${key.asymmetricKeyType} ${key.asymmetricKeyDetails?.namedCurve ?? ''}`.trim());
  }
  return { kind: 'token', key, keyId, teamId };
}

function readCertificateAuth(settings: TableReader): ApnsAuth {
  const passphrase = settings.optionalString('passphrase');
  const p12File = settings.optionalString('p12_file');
  if (p12File !== undefined) {
    if (settings.has('cert_file') || settings.has('key_file')) {
      settings.fail('p12_file', 'give either p12_file, or cert_file with key_file, not both');
    }
    const pfx = settings.fileContents('p12_file', p12File);
    try {
      createSecureContext({ pfx, passphrase });
    } catch (error) {
      settings.fail('p12_file', `"${p12File}" cannot be used as a client certificate (wrong passphrase?): ${(error as Error).message}`);
    }
    return { kind: 'certificate', pfx, passphrase, subject: p12File };
  }
  const certFile = settings.nonEmptyString('cert_file');
  if (!settings.has('key_file')) settings.fail('key_file', 'is required with cert_file (the certificate\'s private key, PEM)');
  const keyFile = settings.nonEmptyString('key_file');
  const cert = settings.fileContents('cert_file', certFile).toString('utf8');
  const key = settings.fileContents('key_file', keyFile).toString('utf8');
  if (!cert.includes('-----BEGIN CERTIFICATE-----')) settings.fail('cert_file', `"${certFile}" holds no PEM certificate`);
  try {
    createSecureContext({ cert, key, passphrase });
  } catch (error) {
    settings.fail('key_file', `"${keyFile}" does not go with "${certFile}" or cannot be decrypted (passphrase?): ${(error as Error).message}`);
  }
  return { kind: 'certificate', cert, key, passphrase, subject: certFile };
}

/**
 * Token auth is chosen by `key_id`/`team_id`, certificate auth by `cert_file`/`p12_file`; `key_file`
 * belongs to either. Both or neither is refused, naming the keys, because guessing would push with
 * credentials the operator did not mean.
 */
function readAuth(settings: TableReader): ApnsAuth {
  const tokenKeys = ['key_id', 'team_id'].filter((key) => settings.has(key));
  const certificateKeys = ['cert_file', 'p12_file'].filter((key) => settings.has(key));
  if (tokenKeys.length > 0 && certificateKeys.length > 0) {
    settings.fail(certificateKeys[0], `token auth (${tokenKeys.join(', ')}) and certificate auth (${certificateKeys.join(', ')}) are both configured; choose one`);
  }
  if (tokenKeys.length === 0 && certificateKeys.length === 0) {
    if (settings.has('key_file')) settings.fail('key_file', 'is not enough on its own: add key_id and team_id (token auth with a .p8 key) or cert_file (certificate auth)');
    settings.fail('key_file', 'no APNS credentials: give token auth (key_file = the .p8 key, key_id, team_id) or certificate auth (cert_file and key_file, or p12_file)');
  }
  if (tokenKeys.length > 0) {
    if (settings.has('passphrase')) settings.fail('passphrase', 'applies to certificate auth only (a .p8 key has no passphrase)');
    return readTokenAuth(settings);
  }
  return readCertificateAuth(settings);
}

export function parseApnsConfig(settings: TableReader): ApnsConfig {
  const topic = settings.nonEmptyString('topic');
  if (/\s/.test(topic)) settings.fail('topic', `must be the app's bundle id (no spaces), got "${topic}"`);
  const environment = settings.oneOf('environment', ['production', 'sandbox'] as const, 'production');
  const origin = settings.httpsOrigin('endpoint', environment === 'sandbox' ? APNS_SANDBOX_ORIGIN : APNS_PRODUCTION_ORIGIN, 'APNS speaks HTTP/2 over TLS');
  const caFile = settings.optionalString('ca_file');
  let ca: string[] | undefined;
  if (caFile !== undefined) {
    const pem = settings.fileContents('ca_file', caFile).toString('utf8');
    if (!pem.includes('-----BEGIN CERTIFICATE-----')) settings.fail('ca_file', `"${caFile}" holds no PEM certificate`);
    ca = [...rootCertificates, pem];
  }
  const auth = readAuth(settings);
  const pushType = settings.oneOf('push_type', ['alert', 'voip', 'background'] as const, 'alert');
  const priority = settings.oneOf('priority', ['high', 'silent', 'auto'] as const, 'auto');
  if (pushType === 'background' && priority === 'high') {
    settings.fail('priority', 'a background push must go with priority 5 (Apple refuses 10): use "silent" or "auto" with push_type = "background"');
  }
  if (pushType === 'voip' && priority === 'silent') {
    settings.fail('priority', 'a VoIP push is always sent with priority 10: use "high" or "auto" with push_type = "voip"');
  }
  const mutableContent = settings.boolean('mutable_content', true);
  const alertText = settings.nonEmptyString('alert_text', 'New Message');
  const includeBody = settings.boolean('include_body', false);
  const sound = settings.optionalString('sound');
  if (sound !== undefined && sound.trim() === '') settings.fail('sound', 'must not be empty (leave it out for a silent alert)');
  const ttlSeconds = settings.has('ttl') ? settings.integer('ttl', undefined, { min: 0, max: MAX_TTL_S }) : undefined;
  const collapseId = settings.optionalString('collapse_id');
  if (collapseId !== undefined && (collapseId === '' || Buffer.byteLength(collapseId) > MAX_COLLAPSE_ID_BYTES)) {
    settings.fail('collapse_id', `must be 1 to ${MAX_COLLAPSE_ID_BYTES} bytes`);
  }
  const badge = settings.boolean('badge', false);
  const connections = settings.integer('connections', 1, { min: 1, max: MAX_CONNECTIONS });
  settings.rejectUnknownKeys();
  return {
    topic, environment, origin, ca, auth, pushType, priority, mutableContent, alertText, includeBody, sound, ttlSeconds,
    collapseId, badge, connections, requestTimeoutMs: DEFAULT_REQUEST_TIMEOUT_MS,
  };
}
