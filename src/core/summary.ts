/**
 * The XEP-0357 summary (urn:xmpp:push:summary), normalised leniently: servers differ a lot
 * (DESIGN §3). An absent or odd summary is normal and never an error.
 */
import type { Summary, Urgency } from '../providers/types.ts';

const MAX_FIELD_LENGTH = 4096;

function count(value: string | undefined): number | undefined {
  if (value === undefined) return undefined;
  const trimmed = value.trim();
  if (!/^\d{1,9}$/.test(trimmed)) return undefined;
  return Number(trimmed);
}

function text(value: string | undefined): string | undefined {
  if (value === undefined) return undefined;
  const trimmed = value.trim();
  if (trimmed === '') return undefined;
  return trimmed.length > MAX_FIELD_LENGTH ? trimmed.slice(0, MAX_FIELD_LENGTH) : trimmed;
}

/** From the summary form's fields (var → first value); unknown fields are ignored. */
export function summaryFromFields(fields: ReadonlyMap<string, string>): Summary {
  const summary: Summary = {};
  const messageCount = count(fields.get('message-count'));
  if (messageCount !== undefined) summary.messageCount = messageCount;
  const pending = count(fields.get('pending-subscription-count'));
  if (pending !== undefined) summary.pendingSubscriptionCount = pending;
  const sender = text(fields.get('last-message-sender'));
  if (sender !== undefined) summary.lastMessageSender = sender;
  const body = text(fields.get('last-message-body'));
  if (body !== undefined) summary.lastMessageBody = body;
  return summary;
}

/** A body announced in the summary means a person should see something; otherwise a silent wake-up. */
export function urgencyOf(summary: Summary): Urgency {
  return summary.lastMessageBody !== undefined ? 'high' : 'normal';
}
