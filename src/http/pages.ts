/**
 * The original's debug pages (push_appserver_debugging): a list of nodes as links and one
 * registration's data. Every value is HTML-escaped: nodes and tokens are client input. Secrets are
 * never shown and tokens only shortened: the pages are for looking, not for taking over a device.
 */
import type { Registration } from '../store/types.ts';

export function escapeHtml(value: string): string {
  return value.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

function page(title: string, body: string): string {
  return `<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>${escapeHtml(title)}</title></head>\n<body><h1>${escapeHtml(title)}</h1>\n${body}</body></html>\n`;
}

/** The first and last characters of a token, enough to tell two apart. */
export function shortened(token: string): string {
  return token.length <= 16 ? `${token.slice(0, 4)}… (${token.length} characters)` : `${token.slice(0, 8)}…${token.slice(-4)} (${token.length} characters)`;
}

const iso = (ms: number | null) => (ms === null ? '' : new Date(ms).toISOString());

export function registrationListPage(registrations: Registration[], total: number, next: string | undefined, base: string): string {
  const items = registrations
    .map((r) => `<li><a href="${escapeHtml(`${base}/${encodeURIComponent(r.node)}`)}">${escapeHtml(r.node)}</a> (${escapeHtml(r.app)})</li>`)
    .join('\n');
  const more = next ? `<p><a href="${escapeHtml(`${base}?after=${encodeURIComponent(next)}`)}">next page</a></p>` : '';
  return page('Registered push nodes', `<p>${total} registrations</p>\n<ul>\n${items}\n</ul>\n${more}`);
}

export function registrationPage(r: Registration): string {
  const rows: Array<[string, string]> = [
    ['type', r.app],
    ['node', r.node],
    ['token', shortened(r.token)],
    ['device', r.deviceKey],
    ['bound_domain', r.boundDomain ?? ''],
    ['registered', iso(r.registeredAt)],
    ['renewed', iso(r.renewedAt)],
    ['last_successful_push', iso(r.lastPushAt)],
    ['last_push_error', iso(r.lastErrorAt)],
    ['last_push_error_reason', r.lastError ?? ''],
    ['push_count', String(r.pushCount)],
  ];
  const table = rows.map(([key, value]) => `<tr><th>${escapeHtml(key)}</th><td>${escapeHtml(value)}</td></tr>`).join('\n');
  return page(`Push node ${r.node}`, `<table>\n${table}\n</table>\n`);
}
