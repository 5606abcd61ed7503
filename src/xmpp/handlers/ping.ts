/** XEP-0199: an XMPP ping is answered with an empty result. */
import type { IqHandler } from '../iq-router.ts';

export const pingHandler: IqHandler = () => true;
