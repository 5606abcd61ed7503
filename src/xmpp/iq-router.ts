/**
 * Routes incoming iqs to one small handler per payload (xmpp.js's callee contract): a handler returns
 * an element (a result with that child), `true` (an empty result) or an IqError (an error reply).
 * A throw becomes internal-server-error (type wait) and a log line; no handler → service-unavailable.
 */
import type { Element } from 'ltx';
import type { Logger } from '../log.ts';
import { errorFor, iqError, isIqError, resultFor, type IqError } from './stanzas.ts';

export type IqHandlerResult = Element | true | IqError;
export type IqHandler = (iq: Element, payload: Element) => IqHandlerResult | Promise<IqHandlerResult>;

export class IqRouter {
  private readonly handlers = new Map<string, IqHandler>();
  private readonly logger: Logger;

  constructor(logger: Logger) {
    this.logger = logger;
  }

  on(type: 'get' | 'set', name: string, xmlns: string, handler: IqHandler): this {
    this.handlers.set(`${type} ${name} ${xmlns}`, handler);
    return this;
  }

  /** Returns the reply to send, or undefined when none is due (results, errors, iqs without id). */
  async handle(iq: Element): Promise<Element | undefined> {
    const { type, id } = iq.attrs;
    if (type !== 'get' && type !== 'set') return undefined;
    if (!id) {
      this.logger.debug('iq without id ignored', { from: iq.attrs.from });
      return undefined;
    }
    const payloads = iq.getChildElements();
    if (payloads.length !== 1) return errorFor(iq, iqError('modify', 'bad-request', 'an iq get/set carries exactly one payload'));
    const payload = payloads[0];
    const handler = this.handlers.get(`${type} ${payload.getName()} ${payload.getNS() ?? ''}`);
    if (!handler) return errorFor(iq, iqError('cancel', 'service-unavailable'));
    try {
      const result = await handler(iq, payload);
      if (result === true) return resultFor(iq);
      if (isIqError(result)) return errorFor(iq, result);
      return resultFor(iq, result);
    } catch (error) {
      this.logger.error('iq handler failed', { from: iq.attrs.from, id, payload: payload.getName(), error });
      return errorFor(iq, iqError('wait', 'internal-server-error'));
    }
  }
}
