/**
 * The one table from a dispatch result to an iq reply (DESIGN §4). The error type decides whether
 * the user's server keeps the registration: ejabberd disables push on the first error that is not
 * `wait`, Prosody after 16 in a row. So only permanent trouble is `cancel`.
 */
import type { DispatchResult } from '../core/dispatcher.ts';
import { iqError, type IqError } from './stanzas.ts';

export function replyForDispatch(result: DispatchResult): true | IqError {
  switch (result.kind) {
    case 'delivered':
      return true;
    case 'not-found':
      return iqError('cancel', 'item-not-found');
    case 'forbidden':
      return iqError('auth', 'forbidden', result.reason);
    case 'temporary':
      // Our own store failing is our fault, not the publisher's load: say so.
      return iqError('wait', result.cause === 'store' ? 'internal-server-error' : 'resource-constraint', result.reason);
    case 'limited':
      return iqError('wait', 'resource-constraint', result.reason);
    case 'rejected':
      // Not the registration's fault (e.g. one oversized body): never make the server disable push.
      return iqError('wait', 'not-acceptable', result.reason);
  }
}
