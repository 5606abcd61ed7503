/**
 * The XMPP side of the app server: the component connection and the handlers wired to it.
 * Presences, and messages no message handler takes (Push 2.0 is one), are dropped without a reply.
 */
import type { Element } from 'ltx';
import type { Logger } from '../log.ts';
import { Component, type ComponentOptions } from './component.ts';
import type { AdHocCommands } from './handlers/commands.ts';
import { Disco } from './handlers/disco.ts';
import { pingHandler } from './handlers/ping.ts';
import { publishHandler, type PushDispatcher } from './handlers/publish.ts';
import type { MessageHandler } from './handlers/push2.ts';
import { IqRouter } from './iq-router.ts';
import { NS } from './stanzas.ts';

export class XmppService {
  readonly component: Component;
  readonly router: IqRouter;
  readonly disco: Disco;
  private readonly logger: Logger;
  private readonly pending = new Set<Promise<void>>();
  private readonly messageHandlers: MessageHandler[] = [];

  constructor(options: ComponentOptions, dispatcher: PushDispatcher, logger: Logger) {
    this.logger = logger;
    this.component = new Component(options, logger.child('component'));
    this.disco = new Disco('push-appserver');
    this.disco.addFeature(NS.ping);
    this.router = new IqRouter(logger)
      .on('get', 'query', NS.discoInfo, this.disco.info)
      .on('get', 'query', NS.discoItems, this.disco.items)
      .on('get', 'ping', NS.ping, pingHandler)
      .on('set', 'pubsub', NS.pubsub, publishHandler(dispatcher));
    this.component.on('stanza', (stanza) => this.onStanza(stanza));
  }

  /** XEP-0050: the registration commands, advertised in disco#info and disco#items, and routed. */
  useCommands(commands: AdHocCommands): this {
    this.disco.addFeature(NS.commands);
    this.disco.addNode(NS.commands, commands.items);
    for (const command of commands.offered()) {
      this.disco.addInfoNode(command.node, { category: 'automation', type: 'command-node', name: command.name }, [NS.commands, NS.dataForms]);
    }
    this.router.on('set', 'command', NS.commands, commands.execute);
    return this;
  }

  /** A handler for messages (e.g. Push 2.0 notifications), advertised with its disco feature. */
  useMessages(feature: string, handler: MessageHandler): this {
    this.disco.addFeature(feature);
    this.messageHandlers.push(handler);
    return this;
  }

  start(): void {
    this.component.start();
  }

  /** Answers what is being handled, then closes the stream. */
  async stop(): Promise<void> {
    await Promise.allSettled([...this.pending]);
    await this.component.stop();
  }

  private onStanza(stanza: Element): void {
    if (stanza.name === 'message' && this.messageHandlers.length > 0) return this.onMessage(stanza);
    if (stanza.name !== 'iq') return;
    const work = this.router.handle(stanza).then((reply) => {
      if (reply && !this.component.send(reply)) {
        this.logger.warn('reply lost: component went offline', { to: stanza.attrs.from, id: stanza.attrs.id });
      }
    }, (error) => this.logger.error('iq handling failed', { error }));
    this.pending.add(work);
    void work.finally(() => this.pending.delete(work));
  }

  private onMessage(message: Element): void {
    const work = (async () => {
      for (const handler of this.messageHandlers) {
        const reply = await handler(message);
        if (reply && !this.component.send(reply)) {
          this.logger.warn('reply lost: component went offline', { to: message.attrs.from, id: message.attrs.id });
        }
        if (reply) return;
      }
    })().catch((error) => this.logger.error('message handling failed', { error }));
    this.pending.add(work);
    void work.finally(() => this.pending.delete(work));
  }
}
