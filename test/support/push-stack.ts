/**
 * The whole chain an integration test needs: a real Prosody, the real app server attached to it as
 * its component, and a sender account (bob) online. Accounts are `<user>@localhost` with password
 * `<user>-pw`.
 */
import { xml } from '@xmpp/client';
import type { Element } from 'ltx';
import type { Table } from '../../src/config/reader.ts';
import { startAppServer, type TestAppServer } from './app-server.ts';
import { startProsody, type ProsodyInstance, type ProsodyOptions } from './prosody.ts';
import { connectClient, type TestClient } from './xmpp-client.ts';

export interface PushStack {
  prosody: ProsodyInstance;
  app: TestAppServer;
  /** The sender account, online. */
  bob: TestClient;
  /** Replaces bob's client (e.g. after Prosody restarted). */
  reconnectBob(): Promise<void>;
  /** Registers a device over HTTP, enables push for `user` (creating the account) and logs the user off. */
  offlineUserWithPush(user: string, type: string, token: string): Promise<{ node: string; secret: string }>;
  stop(): Promise<void>;
}

export async function startPushStack(config: string | Table = {}, prosodyOptions: ProsodyOptions = {}): Promise<PushStack> {
  const prosody = await startProsody(prosodyOptions);
  const login = (user: string) => connectClient({ port: prosody.c2sPort, domain: 'localhost', username: user, password: `${user}-pw` });
  let app: TestAppServer | undefined;
  try {
    await prosody.register('bob', 'localhost', 'bob-pw');
    app = await startAppServer(config, { prosody });
    await app.waitOnline();
    const stack: PushStack = {
      prosody,
      app,
      bob: await login('bob'),
      async reconnectBob() {
        await stack.bob.stop();
        stack.bob = await login('bob');
      },
      async offlineUserWithPush(user, type, token) {
        await prosody.register(user, 'localhost', `${user}-pw`);
        const reply = await stack.app.post('/push_appserver/v1/register', { type, node: `${user}-device`, token });
        const [ok, node, secret] = reply.body.split('\n');
        if (reply.status !== 200 || ok !== 'OK') throw new Error(`registration failed: ${reply.status} ${reply.body}`);
        const client = await login(user);
        await client.enablePush(prosody.componentJid, node, secret);
        await client.stop();
        return { node, secret };
      },
      async stop() {
        await stack.bob.stop();
        await stack.app.stop();
        await prosody.stop();
      },
    };
    return stack;
  } catch (error) {
    await app?.stop();
    await prosody.stop();
    throw error;
  }
}

/** A hand-made XEP-0357 publish, as a user's server sends it (secret omitted when undefined). */
export function publishIq(node: string, secret: string | undefined, options: { summary?: boolean; to?: string } = {}): Element {
  const publishOptions = secret === undefined ? [] : [xml('publish-options', {},
    xml('x', { xmlns: 'jabber:x:data', type: 'submit' },
      xml('field', { var: 'FORM_TYPE' }, xml('value', {}, 'http://jabber.org/protocol/pubsub#publish-options')),
      xml('field', { var: 'secret' }, xml('value', {}, secret))))];
  const form = options.summary === false ? [] : [xml('x', { xmlns: 'jabber:x:data', type: 'form' },
    xml('field', { var: 'FORM_TYPE' }, xml('value', {}, 'urn:xmpp:push:summary')),
    xml('field', { var: 'message-count' }, xml('value', {}, '1')))];
  return xml('iq', { type: 'set', to: options.to ?? 'push.localhost' },
    xml('pubsub', { xmlns: 'http://jabber.org/protocol/pubsub' },
      xml('publish', { node }, xml('item', {}, xml('notification', { xmlns: 'urn:xmpp:push:0' }, ...form))),
      ...publishOptions));
}
