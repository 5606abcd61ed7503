/**
 * The XMPP side of the app server: the component connection and the handlers wired to it.
 * Presences, and messages no message handler takes (Push 2.0 is one), are dropped without a reply.
 */
import { Element } from 'ltx';
import { ThrottledWarning } from '../core/throttled-warning.ts';
import type { Logger } from '../log.ts';
import { Component, type ComponentOptions } from './component.ts';
import type { AdHocCommands } from './handlers/commands.ts';
import { Disco } from './handlers/disco.ts';
import { pingHandler } from './handlers/ping.ts';
import { publishHandler, type PushDispatcher } from './handlers/publish.ts';
import type { MessageHandler } from './handlers/push2.ts';
import { IqRouter } from './iq-router.ts';
import { errorFor, iqError, NS } from './stanzas.ts';
import type { OversizedStanza } from './stream-parser.ts';

export class XmppService {
  readonly component: Component;
  readonly router: IqRouter;
  readonly disco: Disco;
  private readonly logger: Logger;
  private readonly pending = new Set<Promise<void>>();
  private readonly messageHandlers: MessageHandler[] = [];
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
        this.lostReplyWarning.note({ to: stanza.attrs.from, id: stanza.attrs.id, state: this.component.state });
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

  /**
   * A skipped stanza: an iq among them is answered, so its sender does not wait for a timeout (and
   * a publish is not retried as if we were gone). Its opening tag gave us id, from and to, also
   * when that tag alone was over the limit (`partial`: those were kept of it wherever they were,
   * when they fitted OPENING_TAG_KEPT_BYTES); without id and from there is nobody to answer.
   */
  private onOversized(stanza: OversizedStanza): void {
    const { name, attrs, partial } = stanza;
    this.skippedStanzas += 1;
    this.oversizedWarning.note({ name: name ?? '(opening tag too large)', from: attrs.from, bytes: stanza.bytes, reason: stanza.reason, ...(partial ? { opening_tag: 'over the limit' } : {}) });
    if (name !== 'iq' || (attrs.type !== 'get' && attrs.type !== 'set') || !attrs.id) return;
    // Of a tag over the limit, a from too long to keep: a reply without `to` the server would only bounce.
    if (partial && !attrs.from) return;
    const why = stanza.reason === 'depth' ? 'the stanza is nested too deeply' : `the stanza is larger than ${this.maxStanzaBytes} bytes`;
    const iq = new Element('iq', { type: attrs.type, id: attrs.id, from: attrs.from, to: attrs.to });
    const reply = errorFor(iq, iqError('modify', 'policy-violation', why));
    if (!this.component.send(reply)) this.lostReplyWarning.note({ to: attrs.from, id: attrs.id, state: this.component.state });
  }
}
