/**
 * `--via prosody|ejabberd`: a real XMPP server in front of push-appserver, started in a temp dir as
 * the tests start it (test/support), with a second component for the load generator's route
 * (component-route.ts). Prosody takes one connection per component JID; ejabberd's
 * ejabberd_service takes several and spreads the stanzas over them, so `--instances N` works there.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { startEjabberd } from '../test/support/ejabberd.ts';
import { startProsody } from '../test/support/prosody.ts';

export type RouteServerKind = 'prosody' | 'ejabberd';

export interface RouteServer {
  name: string;
  /** push-appserver's component port. */
  componentPort: number;
  /** The load generator's (Prosody: the same listener; ejabberd: a listener of its own). */
  routePort: number;
  /** Whose process tree's CPU is the server's (undefined when it cannot be found). */
  pid: number | undefined;
  stop(): Promise<void>;
}

export interface RouteServerOptions {
  componentJid: string;
  componentSecret: string;
  /** The load generator's own component. */
  routeJid: string;
  routeSecret: string;
}

function pidFromFile(file: string): number | undefined {
  try {
    return Number(readFileSync(file, 'utf8').trim()) || undefined;
  } catch {
    return undefined;
  }
}

export async function startRouteServer(kind: RouteServerKind, options: RouteServerOptions): Promise<RouteServer> {
  const components = { componentJid: options.componentJid, componentSecret: options.componentSecret, extraComponents: { [options.routeJid]: options.routeSecret } };
  if (kind === 'prosody') {
    // Logging at warn: what is measured is routing, not Prosody's debug log.
    const prosody = await startProsody({ ...components, logLevel: 'warn' });
    return { name: 'Prosody', componentPort: prosody.componentPort, routePort: prosody.componentPort, pid: pidFromFile(join(prosody.dir, 'prosody.pid')), stop: () => prosody.stop() };
  }
  const ejabberd = await startEjabberd(components);
  return { name: 'ejabberd', componentPort: ejabberd.componentPort, routePort: ejabberd.extraComponentPort, pid: ejabberd.pid, stop: () => ejabberd.stop() };
}
