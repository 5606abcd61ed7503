/**
 * Push 2.0 (PUSH2.md): the user's server sends `<message><notification xmlns='urn:xmpp:push2:0'>`.
 * It is a message, so success has no reply; a failure is a message error whose type tells the
 * server what to do (PUSH2.md: `wait` = retry with backoff, anything else = do not retry):
 *   temporary trouble (provider 5xx/429, our overload, our limits) → wait / resource-constraint
 *   our store failing                                   → wait / internal-server-error
 *   unknown client, dead token                          → cancel / item-not-found
 *   a JWT that does not verify or is not ours           → auth / not-authorized
 *   a publisher of another domain                       → auth / forbidden
 *   a malformed notification                            → modify / bad-request
 *   a notification that can never be sent (too large)   → modify / not-acceptable
 * This module only parses and translates; core/push2.ts decides.
 */
import { Element } from 'ltx';
import type { Logger } from '../../log.ts';
import type { PushRequest } from '../../core/dispatcher.ts';
import { MAX_CLIENT_LENGTH, PUSH2_NS, push2RequestOptions, type Push2Notification, type Push2Result } from '../../core/push2.ts';
import type { Push2Priority } from '../../providers/types.ts';
import { NS, type ErrorCondition, type ErrorType } from '../stanzas.ts';
import type { PushDispatcher } from './publish.ts';

export const NS_SCE_RFC8291 = 'urn:xmpp:sce:rfc8291:0';
const PRIORITIES: readonly Push2Priority[] = ['high', 'normal', 'low'];

/** A message handler answers with a stanza to send, or nothing. */
export type MessageHandler = (message: Element) => Promise<Element | undefined>;

/** Turns the notification element into the core's value, or says what is malformed. */
export function parsePush2Notification(notification: Element): Push2Notification | string {
  const clients = notification.getChildren('client');
  if (clients.length !== 1) return clients.length === 0 ? 'the notification names no <client>' : 'more than one <client>';
  const client = clients[0].getText().trim();
  if (client === '') return '<client> is empty';
  if (client.length > MAX_CLIENT_LENGTH) return `<client> is longer than ${MAX_CLIENT_LENGTH} characters`;

  const priorityText = notification.getChildText('priority')?.trim();
  const priority = (priorityText === undefined || priorityText === '' ? 'normal' : priorityText) as Push2Priority;
  if (!PRIORITIES.includes(priority)) return `<priority> must be high, normal or low, got ${JSON.stringify(priorityText?.slice(0, 20))}`;

  let payload: Buffer | null = null;
  const encrypted = notification.getChild('encrypted', NS_SCE_RFC8291);
  if (encrypted) {
    const text = (encrypted.getChildText('payload') ?? '').replace(/\s+/g, '');
    if (text === '' || !/^[A-Za-z0-9+/]+={0,2}$/.test(text) || text.length % 4 === 1) return '<payload> is not base64';
    payload = Buffer.from(text, 'base64');
  }

  let jwt: Push2Notification['jwt'] = null;
  const jwtElement = notification.getChild('jwt');
  if (jwtElement) {
    const token = jwtElement.getText().trim();
    const key = jwtElement.attrs.key;
    if (token === '' || typeof key !== 'string' || key.trim() === '') return '<jwt> needs a token and a key attribute';
    jwt = { token, key: key.trim() };
  }
  return { client, priority, voip: notification.getChild('voip') !== undefined, payload, jwt };
}

/** RFC 6120 §8.3 for messages: the error goes back to the sender with the same id. */
export function messageError(message: Element, type: ErrorType, condition: ErrorCondition, text?: string): Element {
  const reply = new Element('message', { type: 'error', to: message.attrs.from, from: message.attrs.to, id: message.attrs.id });
  const error = reply.c('error', { type });
  error.c(condition, { xmlns: NS.stanzas });
  if (text) error.c('text', { xmlns: NS.stanzas }).t(text);
  return reply;
}

/** The one table from a dispatch result to a Push 2.0 answer (see the file comment). */
export function replyForPush2(message: Element, result: Push2Result): Element | undefined {
  // Every kind is answered: a kind added later fails type-checking here (the default's `never`).
  switch (result.kind) {
    case 'delivered':
      return undefined;
    case 'not-found':
      return messageError(message, 'cancel', 'item-not-found');
    case 'forbidden':
      return result.condition === 'not-authorized'
        ? messageError(message, 'auth', 'not-authorized', result.reason)
        : messageError(message, 'auth', 'forbidden', result.reason);
    case 'temporary':
      return messageError(message, 'wait', result.cause === 'store' ? 'internal-server-error' : 'resource-constraint', result.reason);
    case 'limited':
      return messageError(message, 'wait', 'resource-constraint', result.reason);
    case 'rejected':
      return messageError(message, 'modify', 'not-acceptable', result.reason);
    default: {
      const unknown: never = result;
      return unknown;
    }
  }
}

export function push2Handler(dispatcher: PushDispatcher, logger: Logger): MessageHandler {
  return async (message) => {
    // Never answer an error (no loops), and a message without a notification is none of ours.
    if (message.attrs.type === 'error') return undefined;
    const element = message.getChild('notification', PUSH2_NS);
    if (!element) return undefined;
    const notification = parsePush2Notification(element);
    if (typeof notification === 'string') return messageError(message, 'modify', 'bad-request', notification);
    const request: PushRequest = {
      dialect: 'push2',
      // Push 2.0 routes by <client> (core/push2.ts); resolvers of other dialects ignore dialect push2.
      node: notification.client,
      secret: null,
      from: message.attrs.from ?? null,
      summary: {},
      options: push2RequestOptions(notification),
      push2: notification,
    };
    try {
      return replyForPush2(message, await dispatcher.dispatch(request));
    } catch (error) {
      // Our own trouble (e.g. the store): the server may retry.
      logger.error('Push 2.0 notification failed', { from: message.attrs.from, id: message.attrs.id, error });
      return messageError(message, 'wait', 'internal-server-error');
    }
  };
}
