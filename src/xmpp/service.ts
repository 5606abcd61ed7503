/**
 * The XMPP side of the app server: the component connection and the handlers wired to it.
 * Messages and presences carry nothing for an app server and are dropped without a reply.
 */
import type { Element } from 'ltx';
import type { Logger } from '../log.ts';
import { Component, type ComponentOptions } from './component.ts';
import type { AdHocCommands } from './handlers/commands.ts';
import { Disco } from './handlers/disco.ts';
import { pingHandler } from './handlers/ping.ts';
import { publishHandler, type PushDispatcher } from './handlers/publish.ts';
import { IqRouter } from './iq-router.ts';
import { NS } from './stanzas.ts';

export class XmppService {
  readonly component: Component;
  readonly router: IqRouter;
  readonly disco: Disco;
  private readonly logger: Logger;
  private readonly pending = new Set<Promise<void>>();

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

  start(): void {
    this.component.start();
  }

  /** Answers what is being handled, then closes the stream. */
  async stop(): Promise<void> {
    await Promise.allSettled([...this.pending]);
    await this.component.stop();
  }

  private onStanza(stanza: Element): void {
    if (stanza.name !== 'iq') return;
    const work = this.router.handle(stanza).then((reply) => {
      if (reply && !this.component.send(reply)) {
        this.logger.warn('reply lost: component went offline', { to: stanza.attrs.from, id: stanza.attrs.id });
      }
    }, (error) => this.logger.error('iq handling failed', { error }));
    this.pending.add(work);
    void work.finally(() => this.pending.delete(work));
  }
}
