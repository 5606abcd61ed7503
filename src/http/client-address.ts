/**
 * Who is asking, for per-client limits: the socket's peer, or behind a reverse proxy
 * (`http.trust_proxy = true`) the address that proxy appended to X-Forwarded-For (the last one: the
 * ones before it are whatever the client claimed). IPv6 clients are grouped by their /64, which is
 * what one subscriber gets; an IPv4-mapped address counts as the IPv4 address.
 */
import { isIP } from 'node:net';
import type { IncomingHttpHeaders } from 'node:http';

/**
 * Whether the client reached us over HTTPS: only a trusted proxy can say so (X-Forwarded-Proto, the
 * last value being the one that proxy set); our own listener is plain HTTP.
 */
export function viaHttps(headers: IncomingHttpHeaders, trustProxy: boolean): boolean {
  if (!trustProxy) return false;
  const forwarded = headers['x-forwarded-proto'];
  const value = Array.isArray(forwarded) ? forwarded.join(',') : forwarded;
  return value?.split(',').map((part) => part.trim().toLowerCase()).filter((part) => part !== '').pop() === 'https';
}

export function clientAddress(remoteAddress: string, headers: IncomingHttpHeaders, trustProxy: boolean): string {
  let address = remoteAddress;
  if (trustProxy) {
    const forwarded = headers['x-forwarded-for'];
    const value = Array.isArray(forwarded) ? forwarded.join(',') : forwarded;
    const last = value?.split(',').map((part) => part.trim()).filter((part) => part !== '').pop();
    if (last !== undefined && isIP(last) !== 0) address = last;
  }
  return rateKeyOf(address);
}

/** The key an address is limited by: IPv4 as is, IPv6 by its /64. */
export function rateKeyOf(address: string): string {
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address);
  if (mapped) return mapped[1];
  if (isIP(address) !== 6) return address;
  const [head, tail = ''] = address.toLowerCase().split('%')[0].split('::');
  const headWords = head === '' ? [] : head.split(':');
  const tailWords = tail === '' ? [] : tail.split(':');
  const words = address.includes('::') ? [...headWords, ...new Array(Math.max(0, 8 - headWords.length - tailWords.length)).fill('0'), ...tailWords] : headWords;
  return `${words.slice(0, 4).map((word) => Number.parseInt(word, 16).toString(16)).join(':')}::/64`;
}
