/** The one table from a dispatch result to an HTTP reply for POST /push (original text format). */
import type { DispatchResult } from '../core/dispatcher.ts';
import { text, type HttpReply } from './server.ts';

export function httpReplyForDispatch(result: DispatchResult, node: string): HttpReply {
  switch (result.kind) {
    case 'delivered':
      return text(200, `OK\n${node}`);
    case 'not-found':
      return text(404, 'ERROR\nunknown node or wrong secret');
    case 'forbidden':
      return text(403, `ERROR\n${result.reason}`);
    case 'temporary': {
      const seconds = Math.max(1, Math.ceil((result.retryAfterMs ?? 0) / 1000));
      return text(503, `ERROR\n${result.reason}`, { 'retry-after': String(seconds) });
    }
    case 'limited':
      return text(429, `ERROR\n${result.reason}`, { 'retry-after': String(Math.max(1, Math.ceil(result.retryAfterMs / 1000))) });
    case 'rejected':
      return text(422, `ERROR\n${result.reason}`);
  }
}
