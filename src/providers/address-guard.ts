/**
 * Keeps user-supplied push endpoints (UnifiedPush URLs, WebPush subscription endpoints) from making
 * the app server probe internal networks (SSRF). Two checks, because either alone is not enough:
 * - at registration, a literal IP in the URL is refused at once (`forbiddenAddressReason`);
 * - at connect time, a custom `lookup` refuses every resolved address that is not public, so a name
 *   that resolved to a public address yesterday (or at registration) cannot rebind to 127.0.0.1.
 *
 * Ranges: RFC 1122 (0.0.0.0/8, 127/8), RFC 1918, RFC 6598 (100.64/10 CGNAT), RFC 3927 (169.254/16),
 * RFC 5737 / RFC 3849 (documentation), RFC 2544 (198.18/15), multicast and reserved, RFC 4291
 * (::1, ::, fe80::/10, IPv4-mapped), RFC 4193 (fc00::/7 ULA), and the IPv6 forms that embed an IPv4
 * address (IPv4-mapped/-compatible, NAT64 64:ff9b::/96 of RFC 6052, 6to4 2002::/16 of RFC 3056),
 * which are judged by the IPv4 address they carry. Refused outright, because the IPv4 address they
 * lead to cannot be judged from here: SIIT ::ffff:0:0:0/96 (RFC 6145), the local-use NAT64 prefix
 * 64:ff9b:1::/48 (RFC 8215), Teredo 2001::/32 (RFC 4380) and the 6to4 relay anycast 192.88.99.0/24.
 *
 * Ports: an endpoint may use 443 only, unless the app lists more in `allowed_ports`, so a public
 * name cannot be used to reach a mail or database port (`forbiddenPortReason`).
 */
import { lookup as dnsLookup, type LookupAddress, type LookupOptions } from 'node:dns';
import { isIP, isIPv4 } from 'node:net';

type Range = { prefix: number[]; bits: number; reason: string };

function v4(cidr: string, reason: string): Range {
  const [address, bits] = cidr.split('/');
  return { prefix: address.split('.').map(Number), bits: Number(bits), reason };
}

const IPV4_RANGES: Range[] = [
  v4('0.0.0.0/8', 'unspecified ("this network")'),
  v4('10.0.0.0/8', 'private (RFC 1918)'),
  v4('100.64.0.0/10', 'shared address space (CGNAT, RFC 6598)'),
  v4('127.0.0.0/8', 'loopback'),
  v4('169.254.0.0/16', 'link-local'),
  v4('172.16.0.0/12', 'private (RFC 1918)'),
  v4('192.0.0.0/24', 'IETF protocol assignment'),
  v4('192.0.2.0/24', 'documentation'),
  v4('192.88.99.0/24', '6to4 relay anycast (RFC 7526)'),
  v4('192.168.0.0/16', 'private (RFC 1918)'),
  v4('198.18.0.0/15', 'benchmarking'),
  v4('198.51.100.0/24', 'documentation'),
  v4('203.0.113.0/24', 'documentation'),
  v4('224.0.0.0/4', 'multicast'),
  v4('240.0.0.0/4', 'reserved'),
];

function v6(prefixWords: number[], bits: number, reason: string): Range {
  const prefix: number[] = [];
  for (const word of prefixWords) prefix.push(word >> 8, word & 0xff);
  return { prefix, bits, reason };
}

const IPV6_RANGES: Range[] = [
  v6([0xfc00], 7, 'unique local (ULA, RFC 4193)'),
  v6([0xfe80], 10, 'link-local'),
  v6([0xfec0], 10, 'site-local (deprecated)'),
  v6([0xff00], 8, 'multicast'),
  v6([0x2001, 0x0db8], 32, 'documentation'),
  v6([0x0100, 0, 0, 0], 64, 'discard-only (RFC 6666)'),
  v6([0x0000, 0, 0, 0, 0xffff, 0], 96, 'SIIT IPv4-translated (RFC 6145)'),
  v6([0x0064, 0xff9b, 0x0001], 48, 'local-use NAT64 (RFC 8215)'),
  v6([0x2001, 0x0000], 32, 'Teredo (RFC 4380)'),
];

function matches(bytes: number[], range: Range): boolean {
  let bits = range.bits;
  for (let i = 0; bits > 0; i += 1, bits -= 8) {
    const mask = bits >= 8 ? 0xff : (0xff << (8 - bits)) & 0xff;
    if ((bytes[i] & mask) !== ((range.prefix[i] ?? 0) & mask)) return false;
  }
  return true;
}

/** Parses an IPv6 literal (with `::` and an optional trailing dotted quad) into 16 bytes. */
function ipv6Bytes(address: string): number[] | null {
  let text = address.split('%')[0];
  let tail: number[] = [];
  const lastColon = text.lastIndexOf(':');
  if (text.includes('.', lastColon)) {
    const quad = text.slice(lastColon + 1);
    if (!isIPv4(quad)) return null;
    const [a, b, c, d] = quad.split('.').map(Number);
    tail = [(a << 8) | b, (c << 8) | d];
    text = text.slice(0, lastColon + 1) + '0:0';
  }
  const halves = text.split('::');
  if (halves.length > 2) return null;
  const parse = (part: string) => (part === '' ? [] : part.split(':').map((word) => Number.parseInt(word, 16)));
  const head = parse(halves[0]);
  const rest = halves.length === 2 ? parse(halves[1]) : [];
  const words = halves.length === 2 ? [...head, ...new Array(8 - head.length - rest.length).fill(0), ...rest] : head;
  if (words.length !== 8 || words.some((word) => !Number.isInteger(word) || word < 0 || word > 0xffff)) return null;
  if (tail.length > 0) words.splice(6, 2, ...tail);
  return words.flatMap((word) => [word >> 8, word & 0xff]);
}

function ipv4Reason(bytes: number[]): string | null {
  if (bytes.length === 4 && bytes[0] === 255 && bytes[1] === 255 && bytes[2] === 255 && bytes[3] === 255) return 'broadcast';
  return IPV4_RANGES.find((range) => matches(bytes, range))?.reason ?? null;
}

/**
 * Why this IP address must not be contacted, or null when it is a public unicast address.
 * Anything that is not a valid IP literal is refused too: better a clear refusal than a guess.
 */
export function forbiddenAddressReason(address: string): string | null {
  const family = isIP(address.split('%')[0]);
  if (family === 4) return ipv4Reason(address.split('.').map(Number));
  if (family !== 6) return `"${address}" is not an IP address`;
  const bytes = ipv6Bytes(address);
  if (!bytes) return `"${address}" is not an IP address`;
  const zeros = (from: number, to: number) => bytes.slice(from, to).every((byte) => byte === 0);
  if (zeros(0, 15) && bytes[15] === 1) return 'loopback';
  if (zeros(0, 16)) return 'unspecified';
  const embedded = (from: number) => {
    const reason = ipv4Reason(bytes.slice(from, from + 4));
    return reason === null ? null : `${reason}, embedded in IPv6`;
  };
  // IPv4-mapped ::ffff:a.b.c.d and the deprecated IPv4-compatible ::a.b.c.d
  if (zeros(0, 10) && ((bytes[10] === 0xff && bytes[11] === 0xff) || (bytes[10] === 0 && bytes[11] === 0))) return embedded(12);
  // NAT64 well-known prefix 64:ff9b::/96
  if (bytes[0] === 0 && bytes[1] === 0x64 && bytes[2] === 0xff && bytes[3] === 0x9b && zeros(4, 12)) return embedded(12);
  // 6to4 2002:a.b.c.d::/48
  if (bytes[0] === 0x20 && bytes[1] === 0x02) {
    const reason = embedded(2);
    if (reason) return reason;
  }
  return IPV6_RANGES.find((range) => matches(bytes, range))?.reason ?? null;
}

export const DEFAULT_ALLOWED_PORTS: readonly number[] = [443];

/** A reason when the URL's port (explicit or the scheme's default) is neither 443 nor listed. */
export function forbiddenPortReason(url: URL, allowedPorts: readonly number[] = DEFAULT_ALLOWED_PORTS): string | null {
  const port = url.port !== '' ? Number(url.port) : url.protocol === 'http:' ? 80 : 443;
  if (port === 443 || allowedPorts.includes(port)) return null;
  return `port ${port} is not allowed (443${allowedPorts.filter((p) => p !== 443).map((p) => `, ${p}`).join('')}; add it to the app's allowed_ports)`;
}

/** The host of a URL without IPv6 brackets (`new URL('http://[::1]/').hostname` is `[::1]`). */
export function bareHost(url: URL): string {
  return url.hostname.startsWith('[') ? url.hostname.slice(1, -1) : url.hostname;
}

/** For the registration-time check: a reason when the URL's host is a forbidden literal IP. */
export function forbiddenLiteralHost(url: URL): string | null {
  const host = bareHost(url);
  if (isIP(host) === 0) return null;
  const reason = forbiddenAddressReason(host);
  return reason === null ? null : `${host} is ${reason}`;
}

/** The error a guarded lookup fails with; the endpoint client turns it into an Outcome. */
export class ForbiddenAddressError extends Error {
  readonly code = 'ERR_PUSH_FORBIDDEN_ADDRESS';
  constructor(message: string) {
    super(message);
    this.name = 'ForbiddenAddressError';
  }
}

type LookupAllCallback = (error: NodeJS.ErrnoException | null, addresses: LookupAddress[]) => void;
type LookupOneCallback = (error: NodeJS.ErrnoException | null, address: string, family: number) => void;

/** The shape of `dns.lookup` with `all: true`, injectable so tests can simulate DNS rebinding. */
export type ResolveAll = (hostname: string, options: LookupOptions & { all: true }, callback: LookupAllCallback) => void;

const systemResolveAll: ResolveAll = (hostname, options, callback) => dnsLookup(hostname, options, callback);

/**
 * A `lookup` for net/tls/http(s) connect options that drops forbidden addresses and fails when none
 * is left. It answers both call shapes Node uses (`all: true` with autoSelectFamily, and single).
 */
export function guardedLookup(resolveAll: ResolveAll = systemResolveAll) {
  return (hostname: string, options: LookupOptions, callback: LookupAllCallback | LookupOneCallback): void => {
    resolveAll(hostname, { ...options, all: true }, (error, addresses) => {
      if (error) {
        if (options.all) (callback as LookupAllCallback)(error, []);
        else (callback as LookupOneCallback)(error, '', 0);
        return;
      }
      const refused: string[] = [];
      const allowed = addresses.filter(({ address }) => {
        const reason = forbiddenAddressReason(address);
        if (reason) refused.push(`${address} (${reason})`);
        return reason === null;
      });
      if (allowed.length === 0) {
        const refusal = new ForbiddenAddressError(`${hostname} resolves only to addresses we may not contact: ${refused.join(', ') || 'none'}`);
        if (options.all) (callback as LookupAllCallback)(refusal, []);
        else (callback as LookupOneCallback)(refusal, '', 0);
        return;
      }
      if (options.all) (callback as LookupAllCallback)(null, allowed);
      else (callback as LookupOneCallback)(null, allowed[0].address, allowed[0].family);
    });
  };
}
