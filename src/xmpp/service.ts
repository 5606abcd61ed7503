/**
 * The XMPP side of the app server: the component connection and the handlers wired to it.
 * Messages and presences carry nothing for an app server and are dropped without a reply.
 */
import { Element } from 'ltx';
import { ThrottledWarning } from '../core/throttled-warning.ts';
import type { Logger } from '../log.ts';
import { Component, type ComponentOptions } from './component.ts';
import type { AdHocCommands } from './handlers/commands.ts';
import { Disco } from './handlers/disco.ts';
import { pingHandler } from './handlers/ping.ts';
import { publishHandler, type PushDispatcher } from './handlers/publish.ts';
import { IqRouter } from './iq-router.ts';
import { errorFor, iqError, NS } from './stanzas.ts';
import type { OversizedStanza } from './stream-parser.ts';

export class XmppService {
  readonly component: Component;
  readonly router: IqRouter;
  readonly disco: Disco;
  private readonly logger: Logger;
  private readonly pending = new Set<Promise<void>>();
  private readonly maxStanzaBytes: number;
  /** Stanzas skipped for their size or depth since start (for health and tests). */
  skippedStanzas = 0;
  private readonly oversizedWarning: ThrottledWarning;
  private readonly lostReplyWarning: ThrottledWarning;

  constructor(options: ComponentOptions, dispatcher: PushDispatcher, logger: Logger) {
    this.logger = logger;
    this.maxStanzaBytes = options.maxStanzaBytes;
    this.oversizedWarning = new ThrottledWarning(logger, 'stanzas over xmpp.max_stanza_bytes skipped');
    this.lostReplyWarning = new ThrottledWarning(logger, 'replies lost: the component went offline or its outbox is full');
    this.component = new Component(options, logger.child('component'));
    this.disco = new Disco('push-appserver');
    this.disco.addFeature(NS.ping);
    this.router = new IqRouter(logger)
      .on('get', 'query', NS.discoInfo, this.disco.info)
      .on('get', 'query', NS.discoItems, this.disco.items)
      .on('get', 'ping', NS.ping, pingHandler)
      .on('set', 'pubsub', NS.pubsub, publishHandler(dispatcher));
    this.component.on('stanza', (stanza) => this.onStanza(stanza));
    this.component.on('oversized', (stanza) => this.onOversized(stanza));
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
        this.lostReplyWarning.note({ to: stanza.attrs.from, id: stanza.attrs.id, state: this.component.state });
      }
    }, (error) => this.logger.error('iq handling failed', { error }));
    this.pending.add(work);
    void work.finally(() => this.pending.delete(work));
  }

  /**
   * A skipped stanza: an iq among them is answered, so its sender does not wait for a timeout (and
   * a publish is not retried as if we were gone). Its opening tag gave us id, from and to; when the
   * tag itself was too large there is nobody to answer.
   */
  private onOversized(stanza: OversizedStanza): void {
    const { name, attrs } = stanza;
    this.skippedStanzas += 1;
    this.oversizedWarning.note({ name: name ?? '(opening tag too large)', from: attrs.from, bytes: stanza.bytes, reason: stanza.reason });
    if (name !== 'iq' || (attrs.type !== 'get' && attrs.type !== 'set') || !attrs.id) return;
    const why = stanza.reason === 'depth' ? 'the stanza is nested too deeply' : `the stanza is larger than ${this.maxStanzaBytes} bytes`;
    const iq = new Element('iq', { type: attrs.type, id: attrs.id, from: attrs.from, to: attrs.to });
    const reply = errorFor(iq, iqError('modify', 'policy-violation', why));
    if (!this.component.send(reply)) this.lostReplyWarning.note({ to: attrs.from, id: attrs.id, state: this.component.state });
  }
}
