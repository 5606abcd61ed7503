/**
 * Just enough of RFC 7622 (XMPP addresses) to scope and bind registrations: the bare JID and the
 * domain of a requester. Case is folded, because the domain and (for every server we meet) the
 * localpart compare case-insensitively; full stringprep is the XMPP server's job, not ours.
 */

export interface BareJid {
  /** `local@domain` or `domain`, lower-cased, without resource. */
  bare: string;
  domain: string;
}

const MAX_JID = 3071;
const DOMAIN = /^[^\s@/]{1,1023}$/;
const LOCAL = /^[^\s@/"&'<>:]{1,1023}$/;

/** Parses `local@domain/resource`, `local@domain` or `domain`; null when it is not a JID. */
export function parseJid(jid: string): BareJid | null {
  if (jid.length === 0 || jid.length > MAX_JID) return null;
  const slash = jid.indexOf('/');
  const withoutResource = slash === -1 ? jid : jid.slice(0, slash);
  if (slash !== -1 && slash === jid.length - 1) return null;
  const at = withoutResource.indexOf('@');
  const local = at === -1 ? undefined : withoutResource.slice(0, at);
  const domain = (at === -1 ? withoutResource : withoutResource.slice(at + 1)).toLowerCase().replace(/\.$/, '');
  if (!DOMAIN.test(domain)) return null;
  if (local !== undefined && !LOCAL.test(local)) return null;
  return { bare: local === undefined ? domain : `${local.toLowerCase()}@${domain}`, domain };
}

/** True when the JID carries no resource (p2's `muc` must name the room, not an occupant). */
export function isBareJid(jid: string): boolean {
  return !jid.includes('/') && parseJid(jid) !== null;
}
