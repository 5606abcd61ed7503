/**
 * An XMPP stream parser (RFC 6120 §4) over ltx's SAX parser: reports the stream header, each
 * top-level stanza as a tree, and the stream's end. A stanza larger than the limit is an error,
 * so a peer cannot grow our memory without bound.
 */
import { Element, Parser } from 'ltx';

export interface StreamEvents {
  streamStart(attrs: Record<string, string>): void;
  stanza(element: Element): void;
  streamEnd(): void;
  error(error: Error): void;
}

export class StreamParser {
  private readonly sax;
  private readonly events: StreamEvents;
  private readonly maxStanzaChars: number;
  private current: Element | undefined;
  private depth = 0;
  private stanzaChars = 0;
  private failed = false;

  constructor(events: StreamEvents, maxStanzaChars: number) {
    this.events = events;
    this.maxStanzaChars = maxStanzaChars;
    this.sax = new Parser.prototype.DefaultParser();
    this.sax.on('startElement', (name, attrs) => this.onStart(name, attrs));
    this.sax.on('endElement', (name) => this.onEnd(name));
    this.sax.on('text', (text) => {
      if (this.current) this.current.t(text);
    });
    this.sax.on('error', (error) => this.fail(error));
  }

  write(chunk: string): void {
    if (this.failed) return;
    if (this.depth > 1) {
      this.stanzaChars += chunk.length;
      if (this.stanzaChars > this.maxStanzaChars) {
        this.fail(new Error(`stanza larger than ${this.maxStanzaChars} characters`));
        return;
      }
    }
    try {
      this.sax.write(chunk);
    } catch (error) {
      this.fail(error as Error);
    }
  }

  private onStart(name: string, attrs: Record<string, string>): void {
    if (this.depth === 0) {
      this.depth = 1;
      if (name !== 'stream:stream') this.fail(new Error(`expected <stream:stream>, got <${name}>`));
      else this.events.streamStart(attrs);
      return;
    }
    this.depth += 1;
    const element = new Element(name, attrs);
    if (this.current) this.current.cnode(element);
    else this.stanzaChars = 0;
    this.current = element;
  }

  private onEnd(name: string): void {
    if (this.depth === 1) {
      this.depth = 0;
      if (name === 'stream:stream') this.events.streamEnd();
      return;
    }
    if (!this.current || this.current.name !== name) {
      this.fail(new Error(`unexpected </${name}>`));
      return;
    }
    this.depth -= 1;
    const parent = this.current.parent;
    if (this.depth === 1) {
      const stanza = this.current;
      this.current = undefined;
      stanza.parent = null;
      this.events.stanza(stanza);
    } else {
      this.current = parent ?? undefined;
    }
  }

  private fail(error: Error): void {
    if (this.failed) return;
    this.failed = true;
    this.events.error(error);
  }
}
