/**
 * XEP-0030 service discovery. XEP-0357 §4.2: an app server MUST answer with identity
 * pubsub/push and feature urn:xmpp:push:0. Other handlers add their features and item lists.
 */
import { Element } from 'ltx';
import type { IqHandler } from '../iq-router.ts';
import { iqError, NS } from '../stanzas.ts';

export type ItemsProvider = (iq: Element) => Array<{ jid: string; node?: string; name?: string }>;

export class Disco {
  readonly features = new Set<string>([NS.discoInfo, NS.discoItems, NS.push]);
  private readonly nodes = new Map<string, ItemsProvider>();
  private readonly leafNodes = new Map<string, { identity: Record<string, string>; features: string[] }>();
  private readonly name: string;

  constructor(name: string) {
    this.name = name;
  }

  addFeature(feature: string): void {
    this.features.add(feature);
  }

  /** A disco node (e.g. the ad-hoc commands list) answering info and items. */
  addNode(node: string, items: ItemsProvider): void {
    this.nodes.set(node, items);
  }

  /** A node that answers disco#info with its own identity (e.g. one ad-hoc command, XEP-0050 §2.3). */
  addInfoNode(node: string, identity: { category: string; type: string; name: string }, features: string[]): void {
    this.leafNodes.set(node, { identity, features });
  }

  info: IqHandler = (_iq, query) => {
    const node = query.attrs.node;
    const leaf = node === undefined ? undefined : this.leafNodes.get(node);
    if (node !== undefined && !this.nodes.has(node) && !leaf) return iqError('cancel', 'item-not-found');
    const reply = new Element('query', { xmlns: NS.discoInfo, node });
    if (leaf) {
      reply.c('identity', leaf.identity);
      for (const feature of leaf.features) reply.c('feature', { var: feature });
    } else if (node === undefined) {
      reply.c('identity', { category: 'pubsub', type: 'push', name: this.name });
      for (const feature of [...this.features].sort()) reply.c('feature', { var: feature });
    } else {
      reply.c('identity', { category: 'automation', type: 'command-list', name: this.name });
      reply.c('feature', { var: NS.discoInfo });
      reply.c('feature', { var: NS.discoItems });
    }
    return reply;
  };

  items: IqHandler = (iq, query) => {
    const node = query.attrs.node;
    const reply = new Element('query', { xmlns: NS.discoItems, node });
    if (node === undefined) return reply;
    const provider = this.nodes.get(node);
    if (!provider) return iqError('cancel', 'item-not-found');
    for (const item of provider(iq)) reply.c('item', item);
    return reply;
  };
}
