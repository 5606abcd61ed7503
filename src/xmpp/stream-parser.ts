/**
 * An XMPP stream parser (RFC 6120 §4): reports the stream header, each top-level stanza as a tree,
 * and the stream's end.
 *
 * A small byte tokenizer finds the stanza boundaries at depth 1 (it knows tags, quoted attribute
 * values, comments, CDATA and processing instructions, nothing more); only a complete stanza is
 * handed to ltx to build its tree. So the size limit counts the raw bytes of each stanza from its
 * first `<`, opening tag and attributes included, whatever the chunking, and costs linear time.
 * A stanza over the limit (or nested deeper than MAX_DEPTH) is skipped without being buffered: the
 * tokenizer keeps following its structure to find its end and reports it as `oversized`, with the
 * name and attributes of its opening tag (so an iq can be answered). When that tag alone is over the
 * limit, only its name and the attributes a reply needs (id, type, from, to; `partial`) are kept
 * while it is skipped, wherever they are in it, within OPENING_TAG_KEPT_BYTES. Only XML that is not
 * well-formed is an `error`, which ends the stream.
 */
import { Element, parse as parseXml } from 'ltx';

export interface OversizedStanza {
  /** The opening tag's name; null when it was not XML, or over the limit and its name longer than the bytes kept. */
  name: string | null;
  /** Its attributes; when `partial`, only its id, type, from and to that fitted OPENING_TAG_KEPT_BYTES. */
  attrs: Record<string, string>;
  /** The opening tag alone was over the limit: of its attributes only those a reply needs were kept. */
  partial: boolean;
  /** Bytes seen when it was given up, or its full size when it ended in one chunk. */
  bytes: number;
  reason: 'size' | 'depth';
}

export interface StreamEvents {
  streamStart(attrs: Record<string, string>): void;
  stanza(element: Element): void;
  /** A stanza that was skipped; the stream goes on. */
  oversized?(stanza: OversizedStanza): void;
  streamEnd(): void;
  error(error: Error): void;
}

/** Deeper nesting than this is no stanza anyone needs, and recursive tree code should never see it. */
export const MAX_DEPTH = 64;

/** The stream header is no stanza, but it is bounded too. */
const MAX_HEADER_BYTES = 8192;

/**
 * Of an opening tag larger than the limit, the bytes kept while it is skipped: its name and the
 * attributes an iq's error reply needs (REPLY_ATTRIBUTES), wherever they are in it, so its sender
 * is answered instead of waiting for a timeout. Wherever, since a server writes attributes in any
 * order: Prosody in its Lua tables' hash order, which in some of its runs puts any other attribute
 * before the id. A server writes those four in a few hundred bytes; 4 KB leaves room for one
 * JID of the longest RFC 7622 allows (3071 bytes) among them. Fixed whatever the tag's size (a 1 GB
 * attribute costs these 4 KB), and allocated on the first such tag.
 */
export const OPENING_TAG_KEPT_BYTES = 4096;

/** What an iq's error reply is made of, and all that is kept of the attributes of an opening tag over the limit. */
const REPLY_ATTRIBUTES = ['id', 'type', 'from', 'to'];
const LONGEST_REPLY_ATTRIBUTE = 4;

const LT = 0x3c;
const GT = 0x3e;
const SLASH = 0x2f;
const BANG = 0x21;
const QUESTION = 0x3f;
const DQUOTE = 0x22;
const SQUOTE = 0x27;
const SPACE = 0x20;
const EQUALS = 0x3d;

const State = {
  Text: 0,
  TagOpen: 1,
  StartTag: 2,
  EndTag: 3,
  MarkupDecl: 4,
  Comment: 5,
  CData: 6,
  Pi: 7,
} as const;
type State = (typeof State)[keyof typeof State];

function isSpace(byte: number): boolean {
  return byte === 0x20 || byte === 0x09 || byte === 0x0a || byte === 0x0d;
}

/** The name and attributes of an opening tag, parsed by ltx as an empty element; null when it is not XML. */
function parseOpeningTag(tag: string): { name: string; attrs: Record<string, string> } | null {
  const body = tag.endsWith('/>') ? tag : `${tag.slice(0, -1)}/>`;
  try {
    const element = parseXml(body);
    return { name: element.name, attrs: element.attrs };
  } catch {
    return null;
  }
}

const Step = { Open: 0, Name: 1, Between: 2, Value: 3, Done: 4 } as const;
type Step = (typeof Step)[keyof typeof Step];

/**
 * Follows an opening tag over the limit, fed its bytes from its `<` in any chunking, and keeps its
 * name and the first of each of REPLY_ATTRIBUTES that fits in OPENING_TAG_KEPT_BYTES, as the text
 * `<name id='…' from="…"` for ltx to decode as it decodes a whole tag. Other attribute values are
 * jumped over unread.
 */
class OpeningTagKeeper {
  private readonly kept = Buffer.allocUnsafe(OPENING_TAG_KEPT_BYTES);
  private length = 0;
  private step: Step = Step.Open;
  private quote = 0;
  private nameComplete = false;
  /** The first bytes of the attribute name last read, and whether it went on past them. */
  private readonly attrName = Buffer.allocUnsafe(LONGEST_REPLY_ATTRIBUTE);
  private attrNameLength = 0;
  private attrNameTooLong = false;
  /** A space or `=` ended that name: the next name byte begins another. */
  private attrNameEnded = false;
  /** Where in `kept` the attribute whose value is being read begins; -1 when it is not kept. */
  private attrStart = -1;
  private attrIndex = -1;
  /** Which of REPLY_ATTRIBUTES are kept, a bit each. */
  private keptMask = 0;

  get done(): boolean {
    return this.step === Step.Done;
  }

  reset(): void {
    this.length = 0;
    this.step = Step.Open;
    this.nameComplete = false;
    this.attrNameLength = 0;
    this.attrNameTooLong = false;
    this.attrNameEnded = false;
    this.attrStart = -1;
    this.keptMask = 0;
  }

  feed(bytes: Uint8Array): void {
    for (let i = 0; i < bytes.length && this.step !== Step.Done; i += 1) {
      const byte = bytes[i];
      switch (this.step) {
        case Step.Open:
          this.put(byte);
          this.step = Step.Name;
          break;
        case Step.Name:
          if (isSpace(byte) || byte === SLASH || byte === GT) {
            this.nameComplete = true;
            this.step = byte === GT ? Step.Done : Step.Between;
          } else if (!this.put(byte)) {
            this.step = Step.Done;
          }
          break;
        case Step.Between:
          if (byte === GT) this.step = Step.Done;
          else if (byte === DQUOTE || byte === SQUOTE) this.valueBegins(byte);
          else if (isSpace(byte) || byte === EQUALS || byte === SLASH) this.attrNameEnded ||= this.attrNameLength > 0;
          else this.attrNameByte(byte);
          break;
        case Step.Value: {
          // Up to the closing quote, which is kept with the value.
          const close = bytes.indexOf(this.quote, i);
          if (this.attrStart !== -1 && !this.putRange(bytes, i, close === -1 ? bytes.length : close + 1)) this.dropAttribute();
          if (close === -1) return;
          if (this.attrStart !== -1) this.keptMask |= 1 << this.attrIndex;
          this.attrStart = -1;
          this.step = Step.Between;
          i = close;
          break;
        }
      }
    }
  }

  /** The name and the attributes kept (ltx decodes their entities); name null when it did not fit. */
  result(): Pick<OversizedStanza, 'name' | 'attrs' | 'partial'> {
    const opening = this.nameComplete ? parseOpeningTag(`${this.kept.toString('utf8', 0, this.length)}/>`) : null;
    return { name: opening?.name ?? null, attrs: opening?.attrs ?? {}, partial: true };
  }

  private attrNameByte(byte: number): void {
    if (this.attrNameEnded) {
      this.attrNameLength = 0;
      this.attrNameTooLong = false;
      this.attrNameEnded = false;
    }
    if (this.attrNameLength < LONGEST_REPLY_ATTRIBUTE) this.attrName[this.attrNameLength++] = byte;
    else this.attrNameTooLong = true;
  }

  /** The opening quote of the value of the attribute name last read: ` name=` and the value are kept when a reply needs them. */
  private valueBegins(quote: number): void {
    this.quote = quote;
    this.step = Step.Value;
    const nameLength = this.attrNameLength;
    const index = this.attrNameTooLong ? -1 : REPLY_ATTRIBUTES.indexOf(this.attrName.toString('latin1', 0, nameLength));
    this.attrNameLength = 0;
    this.attrNameTooLong = false;
    this.attrNameEnded = false;
    if (index === -1 || (this.keptMask & (1 << index)) !== 0) return;
    this.attrStart = this.length;
    this.attrIndex = index;
    if (!(this.put(SPACE) && this.putRange(this.attrName, 0, nameLength) && this.put(EQUALS) && this.put(quote))) this.dropAttribute();
  }

  private dropAttribute(): void {
    this.length = this.attrStart;
    this.attrStart = -1;
  }

  private put(byte: number): boolean {
    if (this.length === OPENING_TAG_KEPT_BYTES) return false;
    this.kept[this.length++] = byte;
    return true;
  }

  private putRange(bytes: Uint8Array, from: number, to: number): boolean {
    if (this.length + (to - from) > OPENING_TAG_KEPT_BYTES) return false;
    this.kept.set(bytes.subarray(from, to), this.length);
    this.length += to - from;
    return true;
  }
}

/** Short ASCII names seen before, by a hash of their bytes: a stanza's dozens of tag names cost no decoding and no new strings. */
const NAME_CACHE_SIZE = 512;
const MAX_CACHED_NAME = 64;
const nameCache = new Map<number, { bytes: Uint8Array; name: string }>();

function internedName(chunk: Buffer, start: number, end: number): string {
  const length = end - start;
  if (length <= 0 || length > MAX_CACHED_NAME) return chunk.toString('utf8', start, end);
  let hash = length;
  for (let i = start; i < end; i += 1) {
    const byte = chunk[i];
    if (byte >= 0x80) return chunk.toString('utf8', start, end);
    hash = Math.imul(hash ^ byte, 0x01000193);
  }
  const cached = nameCache.get(hash);
  if (cached !== undefined && cached.bytes.length === length) {
    const { bytes } = cached;
    let same = true;
    for (let i = 0; i < length; i += 1) {
      if (bytes[i] !== chunk[start + i]) {
        same = false;
        break;
      }
    }
    if (same) return cached.name;
  }
  const name = chunk.toString('latin1', start, end);
  if (cached === undefined && nameCache.size < NAME_CACHE_SIZE) nameCache.set(hash, { bytes: Uint8Array.prototype.slice.call(chunk, start, end), name });
  return name;
}

export class StreamParser {
  private readonly events: StreamEvents;
  private readonly maxStanzaBytes: number;
  private state: State = State.Text;
  private quote = 0;
  /** The last byte of a start tag outside quotes was `/`: it closes itself. */
  private lastWasSlash = false;
  /** Bytes of `<!…` seen so far, to tell a comment from CDATA. */
  private markup = '';
  /** How much of the current terminator (`-->`, `]]>`, `?>`) has matched. */
  private matched = 0;
  /** 0 before the stream header, 1 inside the stream, 2 and more inside a stanza. */
  private depth = 0;
  /** Element names of the stanza being buffered (not kept while skipping). */
  private readonly names: string[] = [];
  /** A tag name is being read (not while skipping): it starts at nameStart of this chunk, after nameCarry. */
  private inName = false;
  private nameStart = 0;
  /** The name's bytes from earlier chunks, when a chunk ended inside it. */
  private nameCarry: Buffer | undefined;
  /** A unit (the stream header or a stanza) is being read from its `<` on. */
  private inUnit = false;
  /** Where the current chunk's bytes of the unit begin that are not yet kept; -1 outside a unit. */
  private mark = -1;
  /** Chunk slices of the unit being buffered. */
  private buffered: Buffer[] = [];
  private bufferedBytes = 0;
  /** Bytes of the stanza's root opening tag once it closed; 0 while it is still open. */
  private rootTagBytes = 0;
  private skipping: OversizedStanza | undefined;
  /** What is kept of a root opening tag over the limit (allocated on the first one). */
  private tagKeeper: OpeningTagKeeper | undefined;
  /** Skipping a root opening tag over the limit that tagKeeper still follows. */
  private keepingTag = false;
  private failed = false;
  private ended = false;

  constructor(events: StreamEvents, maxStanzaBytes: number) {
    this.events = events;
    this.maxStanzaBytes = maxStanzaBytes;
  }

  write(data: Buffer | string): void {
    if (this.failed || this.ended) return;
    const chunk = typeof data === 'string' ? Buffer.from(data, 'utf8') : data;
    this.mark = this.inUnit ? 0 : -1;
    this.nameStart = 0;
    for (let i = 0; i < chunk.length; i += 1) {
      const byte = chunk[i];
      switch (this.state) {
        case State.Text:
          if (byte === LT) {
            this.state = State.TagOpen;
            if (!this.inUnit) {
              this.inUnit = true;
              this.mark = i;
            }
          } else {
            // Text between tags says nothing about structure: jump to the next '<' (native search,
            // not a JavaScript loop over every byte of every publish).
            const next = chunk.indexOf(LT, i + 1);
            i = (next === -1 ? chunk.length : next) - 1;
          }
          break;
        case State.TagOpen:
          if (byte === SLASH) {
            this.state = State.EndTag;
            this.beginName(i + 1);
          } else if (byte === BANG || byte === QUESTION) {
            this.state = byte === BANG ? State.MarkupDecl : State.Pi;
            this.markup = '';
            this.matched = 0;
            // Between stanzas a comment or a processing instruction belongs to no unit.
            if (this.depth <= 1) this.leaveUnit();
          } else if (isSpace(byte) || byte === GT) {
            return this.fail('a tag without a name');
          } else {
            this.state = State.StartTag;
            this.quote = 0;
            this.lastWasSlash = false;
            this.beginName(i);
          }
          break;
        case State.StartTag:
          if (this.quote !== 0) {
            // An attribute value: jump to its closing quote.
            const close = chunk.indexOf(this.quote, i);
            if (close === -1) {
              i = chunk.length - 1;
            } else {
              i = close;
              this.quote = 0;
            }
          } else if (byte === DQUOTE || byte === SQUOTE) {
            this.quote = byte;
            this.endName(chunk, i);
            this.lastWasSlash = false;
          } else if (byte === GT) {
            this.endName(chunk, i);
            this.startTagClosed(chunk, i);
          } else if (isSpace(byte)) {
            this.endName(chunk, i);
          } else {
            if (byte === SLASH) this.endName(chunk, i);
            this.lastWasSlash = byte === SLASH;
          }
          break;
        case State.EndTag:
          if (byte === GT) this.endTagClosed(chunk, i);
          break;
        case State.MarkupDecl:
          this.markup += String.fromCharCode(byte);
          if (this.markup === '--') {
            this.state = State.Comment;
          } else if (this.markup === '[CDATA[') {
            if (this.depth < 2) return this.fail('CDATA outside a stanza');
            this.state = State.CData;
          } else if (!'--'.startsWith(this.markup) && !'[CDATA['.startsWith(this.markup)) {
            return this.fail('a document type declaration or unknown markup (<!…) is not allowed in XMPP');
          }
          break;
        case State.Comment:
          // `-->`; whether the comment is otherwise well-formed is ltx's to judge when it is buffered.
          if (byte === 0x2d) this.matched = Math.min(this.matched + 1, 2);
          else if (byte === GT && this.matched === 2) this.state = State.Text;
          else this.matched = 0;
          break;
        case State.CData:
          if (byte === 0x5d) this.matched = Math.min(this.matched + 1, 2);
          else if (byte === GT && this.matched === 2) this.state = State.Text;
          else this.matched = 0;
          break;
        case State.Pi:
          if (byte === QUESTION) this.matched = 1;
          else if (byte === GT && this.matched === 1) this.state = State.Text;
          else this.matched = 0;
          break;
      }
      if (this.failed || this.ended) return;
    }
    if (this.inName && this.nameStart < chunk.length) {
      const rest = chunk.subarray(this.nameStart);
      this.nameCarry = this.nameCarry ? Buffer.concat([this.nameCarry, rest]) : Buffer.from(rest);
    }
    if (this.inUnit) this.keep(chunk, this.mark, chunk.length);
  }

  /** A tag name begins at chunk[at] (not recorded while skipping). */
  private beginName(at: number): void {
    this.inName = !this.skipping;
    this.nameStart = at;
    this.nameCarry = undefined;
  }

  /** The name that began at beginName() and ends before chunk[end]; undefined when none was being read. */
  private takeName(chunk: Buffer, end: number): string | undefined {
    if (!this.inName) return undefined;
    this.inName = false;
    const carry = this.nameCarry;
    this.nameCarry = undefined;
    return carry ? Buffer.concat([carry, chunk.subarray(this.nameStart, end)]).toString('utf8') : internedName(chunk, this.nameStart, end);
  }

  private endName(chunk: Buffer, end: number): void {
    const name = this.takeName(chunk, end);
    if (name !== undefined) this.names.push(name);
  }

  private leaveUnit(): void {
    this.inUnit = false;
    this.mark = -1;
    this.buffered = [];
    this.bufferedBytes = 0;
    this.rootTagBytes = 0;
    this.skipping = undefined;
    this.keepingTag = false;
    this.names.length = 0;
    this.inName = false;
    this.nameCarry = undefined;
  }

  /** Holds on to chunk[from, to) for the unit being read, or starts skipping it when it is too large. */
  private keep(chunk: Buffer, from: number, to: number): void {
    this.mark = to;
    if (to <= from) return;
    if (this.skipping) {
      this.skipping.bytes += to - from;
      if (this.keepingTag) this.keepTagBytes(chunk.subarray(from, to));
      return;
    }
    this.buffered.push(chunk.subarray(from, to));
    this.bufferedBytes += to - from;
    if (this.depth === 0) {
      if (this.bufferedBytes > Math.max(this.maxStanzaBytes, MAX_HEADER_BYTES)) this.fail(`stream header larger than ${Math.max(this.maxStanzaBytes, MAX_HEADER_BYTES)} bytes`);
      return;
    }
    if (this.bufferedBytes > this.maxStanzaBytes) this.startSkipping('size');
  }

  private startSkipping(reason: OversizedStanza['reason']): void {
    this.skipping = { name: null, attrs: {}, partial: false, bytes: this.bufferedBytes, reason };
    if (this.rootTagBytes > 0 && this.rootTagBytes <= this.maxStanzaBytes) {
      const opening = parseOpeningTag(this.prefix(this.rootTagBytes));
      if (opening) Object.assign(this.skipping, opening);
    } else {
      this.keepTagStart();
    }
    this.buffered = [];
    this.bufferedBytes = 0;
    this.names.length = 0;
    this.inName = false;
    this.nameCarry = undefined;
  }

  /** Has the root opening tag (over the limit) followed by tagKeeper, from what is buffered of it, and from what follows while it is open. */
  private keepTagStart(): void {
    (this.tagKeeper ??= new OpeningTagKeeper()).reset();
    this.keepingTag = true;
    for (const piece of this.buffered) {
      if (!this.keepingTag) return;
      this.keepTagBytes(piece);
    }
    if (this.keepingTag && this.rootTagBytes > 0) this.tagKept();
  }

  private keepTagBytes(bytes: Uint8Array): void {
    this.tagKeeper!.feed(bytes);
    if (this.tagKeeper!.done) this.tagKept();
  }

  /** The root opening tag ended (or its name did not fit): what is kept of it goes into the report. */
  private tagKept(): void {
    this.keepingTag = false;
    Object.assign(this.skipping!, this.tagKeeper!.result());
  }

  private prefix(bytes: number): string {
    return Buffer.concat(this.buffered).subarray(0, bytes).toString('utf8');
  }

  /** The `>` of a start tag at chunk[i]. */
  private startTagClosed(chunk: Buffer, i: number): void {
    this.state = State.Text;
    if (this.depth === 0) {
      this.keep(chunk, this.mark, i + 1);
      if (this.failed) return;
      const header = Buffer.concat(this.buffered).toString('utf8');
      const name = this.names.pop();
      const selfClosing = this.lastWasSlash;
      this.leaveUnit();
      if (name !== 'stream:stream' || selfClosing) return this.fail(`expected <stream:stream>, got <${name ?? ''}>`);
      const opening = parseOpeningTag(header);
      if (!opening) return this.fail('the stream header is not well-formed');
      this.depth = 1;
      this.events.streamStart(opening.attrs);
      return;
    }
    const selfClosing = this.lastWasSlash;
    if (!this.skipping) {
      if (selfClosing) this.names.pop();
      if (this.rootTagBytes === 0) this.rootTagBytes = this.bufferedBytes + (i + 1 - this.mark);
    } else if (this.keepingTag) {
      // The `>` of the root opening tag that is being skipped.
      this.keepTagBytes(chunk.subarray(this.mark, i + 1));
      if (this.keepingTag) this.tagKept();
    }
    if (selfClosing) {
      if (this.depth === 1) this.stanzaEnded(chunk, i);
      return;
    }
    this.depth += 1;
    if (this.depth - 1 > MAX_DEPTH && !this.skipping) {
      this.keep(chunk, this.mark, i + 1);
      if (!this.skipping) this.startSkipping('depth');
    }
  }

  /** The `>` of an end tag at chunk[i]. */
  private endTagClosed(chunk: Buffer, i: number): void {
    this.state = State.Text;
    const taken = this.takeName(chunk, i);
    // Whitespace inside an end tag's name is not part of it (`</iq >`).
    const name = taken !== undefined && /[ \t\n\r]/.test(taken) ? taken.replace(/[ \t\n\r]/g, '') : taken;
    if (this.depth === 1) {
      this.leaveUnit();
      if (name !== 'stream:stream') return this.fail(`unexpected </${name ?? ''}>`);
      this.depth = 0;
      this.ended = true;
      this.events.streamEnd();
      return;
    }
    if (!this.skipping) {
      const open = this.names.pop();
      if (open !== name) return this.fail(`unexpected </${name ?? ''}>, expected </${open ?? ''}>`);
    }
    this.depth -= 1;
    if (this.depth === 1) this.stanzaEnded(chunk, i);
  }

  private stanzaEnded(chunk: Buffer, i: number): void {
    const tail = i + 1 - this.mark;
    if (this.skipping) {
      this.skipping.bytes += tail;
    } else {
      this.buffered.push(chunk.subarray(this.mark, i + 1));
      this.bufferedBytes += tail;
      // Over the limit within this chunk: reported as if it had been skipped.
      if (this.bufferedBytes > this.maxStanzaBytes) this.startSkipping('size');
    }
    const skipped = this.skipping;
    if (skipped) {
      this.leaveUnit();
      this.events.oversized?.(skipped);
      return;
    }
    // Most stanzas arrive within one chunk: decode that slice, without copying it first.
    const text = this.buffered.length === 1 ? this.buffered[0].toString('utf8') : Buffer.concat(this.buffered).toString('utf8');
    this.leaveUnit();
    let element: Element;
    try {
      element = parseXml(text);
    } catch (error) {
      return this.fail((error as Error).message);
    }
    element.parent = null;
    this.events.stanza(element);
  }

  private fail(message: string): void {
    if (this.failed) return;
    this.failed = true;
    this.leaveUnit();
    this.events.error(new Error(message));
  }
}
