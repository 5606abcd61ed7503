// The part of ltx (the XML library under xmpp.js) this project uses; ltx ships no types.
declare module 'ltx' {
  export type Node = Element | string;
  export class Element {
    constructor(name: string, attrs?: Record<string, string | number | undefined>);
    name: string;
    attrs: Record<string, string>;
    children: Node[];
    parent: Element | null;
    is(name: string, xmlns?: string): boolean;
    getName(): string;
    getNS(): string | undefined;
    getAttr(name: string): string | undefined;
    getChild(name: string, xmlns?: string): Element | undefined;
    getChildren(name: string, xmlns?: string): Element[];
    getChildElements(): Element[];
    getText(): string;
    getChildText(name: string, xmlns?: string): string | null;
    c(name: string, attrs?: Record<string, string | number | undefined>): Element;
    cnode(child: Element): Element;
    t(text: string): Element;
    up(): Element;
    root(): Element;
    append(...nodes: Node[]): Element;
    toString(): string;
  }
  export interface SaxParser {
    write(data: string): void;
    on(event: 'startElement', listener: (name: string, attrs: Record<string, string>) => void): this;
    on(event: 'endElement', listener: (name: string, selfClosing: boolean) => void): this;
    on(event: 'text', listener: (text: string) => void): this;
    on(event: 'error', listener: (error: Error) => void): this;
  }
  export class Parser {
    DefaultParser: new () => SaxParser;
  }
  export function escapeXML(text: string): string;
  export function escapeXMLText(text: string): string;
  export function parse(xml: string): Element;
}
