// The part of @xmpp/client the tests use; the package ships no types.
declare module '@xmpp/client' {
  import type { Element } from 'ltx';
  export interface XmppClient {
    jid: { toString(): string; bare(): { toString(): string } } | null;
    start(): Promise<unknown>;
    stop(): Promise<unknown>;
    send(element: Element): Promise<void>;
    on(event: 'stanza', listener: (stanza: Element) => void): void;
    on(event: 'error', listener: (error: Error) => void): void;
    on(event: 'online', listener: () => void): void;
    on(event: 'offline', listener: () => void): void;
    iqCaller: { request(element: Element, timeout?: number): Promise<Element> };
    reconnect: { stop(): void };
    streamManagement?: unknown;
  }
  export function client(options: { service: string; domain: string; username: string; password: string; resource?: string }): XmppClient;
  export function xml(name: string, attrs?: Record<string, string | undefined>, ...children: Array<Element | string>): Element;
}
