/**
 * Building replies: iq results and errors (RFC 6120 §8.3), with the error type that DESIGN §4 picks.
 */
import { Element } from 'ltx';

export const NS = {
  stanzas: 'urn:ietf:params:xml:ns:xmpp-stanzas',
  discoInfo: 'http://jabber.org/protocol/disco#info',
  discoItems: 'http://jabber.org/protocol/disco#items',
  ping: 'urn:xmpp:ping',
  pubsub: 'http://jabber.org/protocol/pubsub',
  pubsubErrors: 'http://jabber.org/protocol/pubsub#errors',
  push: 'urn:xmpp:push:0',
  dataForms: 'jabber:x:data',
  commands: 'http://jabber.org/protocol/commands',
  version: 'jabber:iq:version',
} as const;

export type ErrorType = 'auth' | 'cancel' | 'continue' | 'modify' | 'wait';

export type ErrorCondition =
  | 'bad-request'
  | 'feature-not-implemented'
  | 'forbidden'
  | 'internal-server-error'
  | 'item-not-found'
  | 'not-acceptable'
  | 'not-allowed'
  | 'not-authorized'
  | 'policy-violation'
  | 'resource-constraint'
  | 'service-unavailable'
  | 'remote-server-timeout';

/** What a handler returns to ask for an error reply. */
export interface IqError {
  readonly kind: 'iq-error';
  type: ErrorType;
  condition: ErrorCondition;
  text?: string;
  /** An application-specific condition element (e.g. a pubsub#errors or commands one). */
  extra?: Element;
}

export function iqError(type: ErrorType, condition: ErrorCondition, text?: string, extra?: Element): IqError {
  return { kind: 'iq-error', type, condition, text, extra };
}

export function isIqError(value: unknown): value is IqError {
  return typeof value === 'object' && value !== null && (value as IqError).kind === 'iq-error';
}

function replyTo(iq: Element, type: 'result' | 'error'): Element {
  return new Element('iq', { type, id: iq.attrs.id, to: iq.attrs.from, from: iq.attrs.to });
}

export function resultFor(iq: Element, child?: Element): Element {
  const reply = replyTo(iq, 'result');
  if (child) reply.cnode(child);
  return reply;
}

export function errorFor(iq: Element, error: IqError): Element {
  const reply = replyTo(iq, 'error');
  const element = reply.c('error', { type: error.type });
  element.c(error.condition, { xmlns: NS.stanzas });
  if (error.text) element.c('text', { xmlns: NS.stanzas }).t(error.text);
  if (error.extra) element.cnode(error.extra);
  return reply;
}
