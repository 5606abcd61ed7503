/**
 * XEP-0357 §5: the user's server publishes a notification to our pubsub node (DESIGN §3).
 * Summary parsing is lenient: servers send no form, a form beside <notification/>, a form without
 * FORM_TYPE, or an encrypted payload we cannot read; all of those are a plain wake-up.
 */
import type { Element } from 'ltx';
import type { DispatchResult, PushRequest } from '../../core/dispatcher.ts';
import { summaryFromFields } from '../../core/summary.ts';
import { findForm, readForm } from '../forms.ts';
import type { IqHandler } from '../iq-router.ts';
import { replyForDispatch } from '../replies.ts';
import { iqError, NS } from '../stanzas.ts';
import { Element as XmlElement } from 'ltx';

const SUMMARY_FORM = 'urn:xmpp:push:summary';

export interface PushDispatcher {
  dispatch(request: PushRequest): Promise<DispatchResult>;
}

function summaryForm(item: Element | undefined): Element | undefined {
  const notification = item?.getChild('notification', NS.push);
  return findForm(notification, SUMMARY_FORM) ?? findForm(item, SUMMARY_FORM) ?? findForm(notification);
}

/** Turns a publish into a PushRequest, or explains what is malformed. */
export function parsePublish(iq: Element, pubsub: Element): PushRequest | string {
  const publishes = pubsub.getChildren('publish');
  if (publishes.length !== 1) return publishes.length === 0 ? 'no <publish/> in the pubsub request' : 'more than one <publish/>';
  const publish = publishes[0];
  const node = publish.attrs.node;
  if (!node) return '<publish/> names no node';
  const item = publish.getChild('item');
  const summary = summaryFromFields(readForm(summaryForm(item)).fields);
  const options = readForm(findForm(pubsub.getChild('publish-options'))).fields;
  const secret = options.get('secret') ?? null;
  options.delete('secret');
  return { dialect: 'xep0357', node, secret, from: iq.attrs.from ?? null, summary, options };
}

export function publishHandler(dispatcher: PushDispatcher): IqHandler {
  return async (iq, pubsub) => {
    const request = parsePublish(iq, pubsub);
    if (typeof request === 'string') {
      const extra = request.endsWith('names no node') ? new XmlElement('nodeid-required', { xmlns: NS.pubsubErrors }) : undefined;
      return iqError('modify', 'bad-request', request, extra);
    }
    return replyForDispatch(await dispatcher.dispatch(request));
  };
}
