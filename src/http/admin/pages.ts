/**
 * The admin pages as server-rendered HTML: no script, one small stylesheet, readable on a phone.
 * Every value passes through `h` (nodes, tokens, JIDs and provider answers are outside input).
 */
import type { Registration } from '../../store/types.ts';
import { describeAnswer, type TestPushResult } from '../../ops/test-push.ts';
import type { HourSummary } from '../../ops/recent.ts';

export function h(value: string | number | null | undefined): string {
  return String(value ?? '').replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

export const STYLESHEET = `
:root { color-scheme: light; --fg: #1d2330; --muted: #5b6475; --line: #d9dde5; --ok: #17803d; --bad: #b42318; --accent: #2857c5; }
* { box-sizing: border-box; }
body { margin: 0; font: 15px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: var(--fg); background: #f5f6f8; }
header { background: #1d2330; color: #fff; padding: .6rem 1rem; display: flex; flex-wrap: wrap; gap: .4rem 1rem; align-items: center; }
header strong { margin-right: auto; }
header a, header button { color: #fff; background: none; border: 0; font: inherit; text-decoration: none; padding: 0; cursor: pointer; }
header form { margin: 0; }
main { max-width: 60rem; margin: 0 auto; padding: 1rem; }
h1 { font-size: 1.35rem; margin: .2rem 0 1rem; }
h2 { font-size: 1.1rem; margin: 1.5rem 0 .5rem; }
section, .card { background: #fff; border: 1px solid var(--line); border-radius: 8px; padding: .8rem 1rem; margin-bottom: 1rem; }
table { width: 100%; border-collapse: collapse; }
th, td { text-align: left; padding: .4rem .5rem; border-bottom: 1px solid var(--line); vertical-align: top; }
th { font-weight: 600; color: var(--muted); font-size: .85rem; }
td { overflow-wrap: break-word; word-break: break-word; }
section > h2:first-child { margin-top: 0; }
.kv th { width: 11rem; }
.ok { color: var(--ok); font-weight: 600; }
.bad { color: var(--bad); font-weight: 600; }
.muted { color: var(--muted); }
code { font: .9em ui-monospace, SFMono-Regular, Menlo, monospace; overflow-wrap: anywhere; }
form.search { display: grid; grid-template-columns: repeat(auto-fit, minmax(10rem, 1fr)); gap: .5rem; align-items: end; }
label { display: block; font-size: .85rem; color: var(--muted); }
input, select { width: 100%; font: inherit; padding: .45rem .5rem; border: 1px solid var(--line); border-radius: 6px; background: #fff; }
button, .button { font: inherit; padding: .5rem .9rem; border-radius: 6px; border: 1px solid var(--accent); background: var(--accent); color: #fff; cursor: pointer; text-decoration: none; display: inline-block; }
button.danger, .button.danger { background: var(--bad); border-color: var(--bad); }
.button.plain { background: #fff; color: var(--accent); }
.actions { display: flex; flex-wrap: wrap; gap: .6rem; margin-top: .8rem; }
.actions form { margin: 0; }
.result { border-left: 4px solid var(--ok); }
.result.failed { border-left-color: var(--bad); }
.pager { display: flex; gap: 1rem; justify-content: space-between; margin-top: .8rem; }
.error { border-left: 4px solid var(--bad); }
@media (max-width: 40rem) {
  .wide { display: none; }
  .kv th { width: 7.5rem; }
  main { padding: .6rem; }
}
`;

const iso = (ms: number | null | undefined) => (ms === null || ms === undefined ? '—' : new Date(ms).toISOString().replace('T', ' ').replace(/\.\d+Z$/, ' UTC'));

export interface Chrome {
  csrf?: string;
}

export function layout(title: string, body: string, chrome: Chrome = {}): string {
  const nav = chrome.csrf === undefined ? '' : `<a href="/admin">Overview</a><a href="/admin/registrations">Registrations</a>
<form method="post" action="/admin/logout"><input type="hidden" name="csrf" value="${h(chrome.csrf)}"><button type="submit">Sign out</button></form>`;
  return `<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>${h(title)} · push-appserver</title><link rel="stylesheet" href="/admin/style.css"></head>
<body><header><strong>push-appserver</strong>${nav}</header>
<main><h1>${h(title)}</h1>
${body}
</main></body></html>
`;
}

export function signInPage(loginCsrf: string, problem?: string): string {
  return layout('Sign in', `${problem ? `<section class="error"><p class="bad">${h(problem)}</p></section>` : ''}
<section><form method="post" action="/admin/login">
<input type="hidden" name="csrf" value="${h(loginCsrf)}">
<label for="token">Admin token (<code>http.admin_token</code>)</label>
<input id="token" name="token" type="password" autocomplete="current-password" required>
<div class="actions"><button type="submit">Sign in</button></div>
</form></section>`);
}

export interface OverviewApp {
  name: string;
  provider: string;
  state: 'ok' | 'degraded';
  detail: string | undefined;
  hour: HourSummary;
  credentialsExpire: number | undefined;
}

export interface OverviewData {
  componentJid: string;
  component: { state: string; connectedSince: number | undefined; lastError: string | undefined };
  apps: OverviewApp[];
  retriesPending: number;
}

export function overviewPage(data: OverviewData, csrf: string): string {
  const online = data.component.state === 'online';
  const apps = data.apps.map((app) => `<tr>
<td><a href="/admin/registrations?app=${encodeURIComponent(app.name)}">${h(app.name)}</a></td><td>${h(app.provider)}</td>
<td><span class="${app.state === 'ok' ? 'ok' : 'bad'}">${h(app.state)}</span>${app.detail ? `<br><span class="muted">${h(app.detail)}</span>` : ''}${app.credentialsExpire ? `<br><span class="muted">certificate expires ${h(iso(app.credentialsExpire))}</span>` : ''}</td>
<td>${h(app.hour.delivered)}</td><td>${app.hour.errors > 0 ? `<span class="bad">${h(app.hour.errors)}</span>` : '0'}</td></tr>`).join('\n');
  const failures = data.apps.flatMap((app) => app.hour.failures.map((failure) => ({ app: app.name, ...failure })))
    .sort((a, b) => b.at - a.at).slice(0, 10)
    .map((failure) => `<tr><td>${h(iso(failure.at))}</td><td>${h(failure.app)}</td><td>${h(failure.outcome)}</td><td>${h(failure.status ?? '—')}</td></tr>`).join('\n');
  return layout('Overview', `<section>
<h2>XMPP component</h2>
<table class="kv">
<tr><th>JID</th><td><code>${h(data.componentJid)}</code></td></tr>
<tr><th>State</th><td><span class="${online ? 'ok' : 'bad'}">${h(data.component.state)}</span></td></tr>
<tr><th>Connected since</th><td>${h(iso(data.component.connectedSince))}</td></tr>
${data.component.lastError ? `<tr><th>Last error</th><td>${h(data.component.lastError)}</td></tr>` : ''}
<tr><th>Retries pending</th><td>${h(data.retriesPending)}</td></tr>
</table></section>
<section><h2>Apps</h2>
<table><thead><tr><th>App</th><th>Provider</th><th>Status</th><th>Pushes (1 h)</th><th>Errors (1 h)</th></tr></thead>
<tbody>${apps}</tbody></table></section>
${failures ? `<section><h2>Recent provider errors</h2><table><thead><tr><th>When</th><th>App</th><th>Outcome</th><th>HTTP</th></tr></thead><tbody>${failures}</tbody></table></section>` : ''}`, { csrf });
}

export interface SearchForm {
  node: string;
  token: string;
  jid: string;
  app: string;
}

export function registrationsPage(form: SearchForm, apps: string[], registrations: Registration[], total: number, page: number, pageSize: number, csrf: string): string {
  const query = (p: number) => `/admin/registrations?${new URLSearchParams({ ...form, page: String(p) }).toString()}`;
  const rows = registrations.map((r) => `<tr>
<td><a href="/admin/registration?node=${encodeURIComponent(r.node)}"><code>${h(r.node)}</code></a></td><td>${h(r.app)}</td>
<td class="wide"><code>${h(shortToken(r.token))}</code></td><td class="wide">${h(jidOf(r) ?? '—')}</td><td class="wide">${h(iso(r.lastPushAt))}</td></tr>`).join('\n');
  const pages = Math.max(1, Math.ceil(total / pageSize));
  const options = ['', ...apps].map((app) => `<option value="${h(app)}"${app === form.app ? ' selected' : ''}>${app === '' ? 'any app' : h(app)}</option>`).join('');
  return layout('Registrations', `<section><form class="search" method="get" action="/admin/registrations">
<div><label for="node">Node starts with</label><input id="node" name="node" value="${h(form.node)}"></div>
<div><label for="token">Token starts with</label><input id="token" name="token" value="${h(form.token)}"></div>
<div><label for="jid">Registered by JID</label><input id="jid" name="jid" value="${h(form.jid)}" inputmode="email"></div>
<div><label for="app">App</label><select id="app" name="app">${options}</select></div>
<div><button type="submit">Search</button></div>
</form></section>
<section><p class="muted">${h(total)} found · page ${h(page)} of ${h(pages)}</p>
<table><thead><tr><th>Node</th><th>App</th><th class="wide">Token</th><th class="wide">JID</th><th class="wide">Last push</th></tr></thead>
<tbody>${rows || '<tr><td colspan="5" class="muted">No registration matches.</td></tr>'}</tbody></table>
<div class="pager">${page > 1 ? `<a href="${h(query(page - 1))}">← previous</a>` : '<span></span>'}${page < pages ? `<a href="${h(query(page + 1))}">next →</a>` : ''}</div>
</section>`, { csrf });
}

function shortToken(token: string): string {
  return token.length > 24 ? `${token.slice(0, 16)}…${token.slice(-6)}` : token;
}

/** The registering JID, from the device key's scope (`jid|device`), when there was one. */
function jidOf(r: Registration): string | undefined {
  const named = /^\|jid=([^|]+)\|/.exec(r.deviceKey);
  if (named) return `${named[1]} (named over HTTP)`;
  const bar = r.deviceKey.indexOf('|');
  return bar > 0 ? r.deviceKey.slice(0, bar) : undefined;
}

function resultCard(result: TestPushResult): string {
  const ok = result.outcome.kind === 'delivered';
  return `<section class="result${ok ? '' : ' failed'}" id="test-result"><h2>Test push: <span class="${ok ? 'ok' : 'bad'}">${ok ? 'delivered' : 'not delivered'}</span></h2>
<p>The push service answered: <code>${h(describeAnswer(result))}</code></p>
<p class="muted">${h(iso(result.at))} · ${h(Math.round(result.seconds * 1000))} ms</p></section>`;
}

export function registrationDetailPage(r: Registration, history: TestPushResult[], csrf: string, justSent?: TestPushResult): string {
  const rows: Array<[string, string]> = [
    ['Node', `<code>${h(r.node)}</code>`],
    ['App', h(r.app)],
    ['Token', `<code>${h(r.token)}</code>`],
    ['Registered by', h(jidOf(r) ?? 'anonymous (HTTP)')],
    ['Device key', `<code>${h(r.deviceKey)}</code>`],
    ['Bound to domain', h(r.boundDomain ?? '—')],
    ['Push 2.0 key', r.push2Key ? `<code>${h(r.push2Key)}</code>` : '<span class="muted">none yet (the first notification whose JWT verifies pins its key)</span>'],
    ['Registered', h(iso(r.registeredAt))],
    ['Renewed', h(iso(r.renewedAt))],
    ['Pushes', h(r.pushCount)],
    ['Last push', h(iso(r.lastPushAt))],
    ['Last error', r.lastError ? `<span class="bad">${h(r.lastError)}</span><br><span class="muted">${h(iso(r.lastErrorAt))}</span>` : '—'],
  ];
  const tests = history.map((result) => `<tr><td>${h(iso(result.at))}</td><td>${h(describeAnswer(result))}</td></tr>`).join('\n');
  const node = h(r.node);
  return layout('Registration', `${justSent ? resultCard(justSent) : ''}
<section><table class="kv">${rows.map(([k, v]) => `<tr><th>${h(k)}</th><td>${v}</td></tr>`).join('\n')}</table>
<div class="actions">
<form method="post" action="/admin/registration/test-push"><input type="hidden" name="csrf" value="${h(csrf)}"><input type="hidden" name="node" value="${node}"><button type="submit">Send test push</button></form>
<a class="button danger" href="/admin/registration/remove?node=${encodeURIComponent(r.node)}">Remove…</a>
</div></section>
<section><h2>Test pushes from this page</h2>
${tests ? `<table><thead><tr><th>When</th><th>Answer</th></tr></thead><tbody>${tests}</tbody></table>` : '<p class="muted">None yet.</p>'}</section>`, { csrf });
}

/** A test push found the token dead: the registration is gone, as after any push with a dead token. */
export function testPushRemovedPage(r: Registration, result: TestPushResult, csrf: string): string {
  return layout('Registration removed', `${resultCard(result)}
<section class="error" id="removed"><p>The push service says this token is dead, so the registration <code>${h(r.node)}</code> of app <strong>${h(r.app)}</strong> was removed, as it is after any push to a dead token. The device gets pushes again once it registers again.</p>
<p><a href="/admin/registrations">Registrations</a></p></section>`, { csrf });
}

export function confirmRemovePage(r: Registration, csrf: string): string {
  return layout('Remove registration?', `<section class="error">
<p>Remove the registration <code>${h(r.node)}</code> of app <strong>${h(r.app)}</strong>? The device gets no pushes until it registers again.</p>
<div class="actions">
<form method="post" action="/admin/registration/remove"><input type="hidden" name="csrf" value="${h(csrf)}"><input type="hidden" name="node" value="${h(r.node)}"><input type="hidden" name="confirm" value="yes"><button class="danger" type="submit">Yes, remove it</button></form>
<a class="button plain" href="/admin/registration?node=${encodeURIComponent(r.node)}">Cancel</a>
</div></section>`, { csrf });
}

export function messagePage(title: string, message: string, csrf?: string): string {
  return layout(title, `<section><p>${h(message)}</p><p><a href="/admin/registrations">Registrations</a></p></section>`, { csrf });
}
