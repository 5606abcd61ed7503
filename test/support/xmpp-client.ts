/**
 * A real XMPP client account (xmpp.js) for integration tests: log in to the test Prosody, enable
 * push (XEP-0357 §5), send messages, run iqs. No stream management (see FIELD-NOTES).
 */
import { client, xml, type XmppClient } from '@xmpp/client';
import type { Element } from 'ltx';

export interface TestClient {
  jid: string;
  raw: XmppClient;
  /** XEP-0357 <enable/> with the node and secret an app server handed out. */
  enablePush(appServerJid: string, node: string, secret: string, extraFields?: Record<string, string>): Promise<Element>;
  disablePush(appServerJid: string, node?: string): Promise<Element>;
  sendMessage(to: string, body: string): Promise<void>;
  /** Sends an iq and resolves with the result; an error reply rejects with the error stanza attached. */
  iq(element: Element, timeoutMs?: number): Promise<Element>;
  /** Collects stanzas the client receives. */
  received: Element[];
  stop(): Promise<void>;
}

export interface IqErrorDetails {
  type: string | undefined;
  condition: string | undefined;
  text: string | undefined;
}

/** Reads `type` and the defined condition from an xmpp.js StanzaError or an error iq. */
export function iqErrorOf(error: unknown): IqErrorDetails {
  const stanza = (error as { element?: Element }).element;
  const errorElement = stanza?.getChild('error') ?? stanza;
  const condition = errorElement?.getChildElements().find((child) => child.getNS() === 'urn:ietf:params:xml:ns:xmpp-stanzas' && child.name !== 'text');
  return {
    type: errorElement?.attrs.type,
    condition: condition?.name ?? (error as { condition?: string }).condition,
    text: errorElement?.getChildText('text') ?? undefined,
  };
}

/** Awaits an iq that must fail and returns its error's type and condition. */
export async function rejectionOf(promise: Promise<unknown>): Promise<IqErrorDetails> {
  try {
    await promise;
  } catch (error) {
    return iqErrorOf(error);
  }
  throw new Error('expected an error reply, got a result');
}

export async function connectClient(options: { port: number; domain: string; username: string; password: string; resource?: string }): Promise<TestClient> {
  const xmpp = client({
    service: `xmpp://127.0.0.1:${options.port}`,
    domain: options.domain,
    username: options.username,
    password: options.password,
    resource: options.resource ?? 'test',
  });
  const received: Element[] = [];
  xmpp.on('stanza', (stanza) => received.push(stanza));
  xmpp.on('error', () => {});
  await xmpp.start();
  xmpp.reconnect.stop();
  const jid = xmpp.jid!.toString();
  // Prosody sends offline messages only to available resources; presence makes us one.
  await xmpp.send(xml('presence'));

  return {
    jid,
    raw: xmpp,
    received,
    enablePush(appServerJid, node, secret, extraFields = {}) {
      const fields = [
        xml('field', { var: 'FORM_TYPE' }, xml('value', {}, 'http://jabber.org/protocol/pubsub#publish-options')),
        xml('field', { var: 'secret' }, xml('value', {}, secret)),
        ...Object.entries(extraFields).map(([name, value]) => xml('field', { var: name }, xml('value', {}, value))),
      ];
      return xmpp.iqCaller.request(xml('iq', { type: 'set' },
        xml('enable', { xmlns: 'urn:xmpp:push:0', jid: appServerJid, node }, xml('x', { xmlns: 'jabber:x:data', type: 'submit' }, ...fields))));
    },
    disablePush(appServerJid, node) {
      return xmpp.iqCaller.request(xml('iq', { type: 'set' }, xml('disable', { xmlns: 'urn:xmpp:push:0', jid: appServerJid, node })));
    },
    async sendMessage(to, body) {
      await xmpp.send(xml('message', { to, type: 'chat', id: `m-${Date.now()}-${Math.random()}` }, xml('body', {}, body)));
    },
    iq(element, timeoutMs = 10_000) {
      return xmpp.iqCaller.request(element, timeoutMs);
    },
    async stop() {
      await xmpp.stop().catch(() => {});
    },
  };
}
