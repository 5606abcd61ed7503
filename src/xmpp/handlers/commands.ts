/**
 * XEP-0050 ad-hoc commands: the XMPP registration dialects (DESIGN §6).
 * - `v1-register-push` / `v1-unregister-push` (the original app server; yaxim, old Monal):
 *   fields type, node, token → jid, node, secret.
 * - Conversations' p2: `register-push-fcm` / `register-push-apns` (token, device-id or android-id,
 *   optional muc) → jid, node, secret; `unregister-push-fcm` / `unregister-push-apns`. The app each
 *   maps to is `[dialects.p2]`; unmapped ones are neither listed nor executable.
 *
 * Every registration made here is scoped by the requester's bare JID and bound to its domain
 * (DESIGN §5): the `from` of a c2s-routed iq is stamped by the user's server, so it is proof of who
 * asks. Registering is limited per requesting JID and per domain (`wait`/`resource-constraint`);
 * unregistering may also remove an anonymous HTTP registration by its node. Replies follow XEP-0050 §3: `status='completed'` with a `sessionid`, a blank form
 * (`status='executing'`) when executed without one, `action='cancel'` → `status='canceled'`.
 * Sessions are not stored: each submitted form is complete in itself, so a submission is accepted
 * whatever its sessionid (and any instance of a cluster can answer it).
 */
import { randomUUID } from 'node:crypto';
import { Element } from 'ltx';
import type { P2DialectConfig } from '../../config/schema.ts';
import { parseJid, isBareJid, type BareJid } from '../../core/jid.ts';
import type { RegisterResult, Registrations, RegistrationFailure, UnregisterResult } from '../../core/registrations.ts';
import { KeyedRateLimiter } from '../../core/rate-limit.ts';
import { ThrottledWarning } from '../../core/throttled-warning.ts';
import type { Logger } from '../../log.ts';
import { buildForm, findForm, readForm } from '../forms.ts';
import type { IqHandler, IqHandlerResult } from '../iq-router.ts';
import { iqError, NS, type IqError } from '../stanzas.ts';
import type { ItemsProvider } from './disco.ts';

export const COMMAND_NODES = {
  v1Register: 'v1-register-push',
  v1Unregister: 'v1-unregister-push',
  p2RegisterFcm: 'register-push-fcm',
  p2UnregisterFcm: 'unregister-push-fcm',
  p2RegisterApns: 'register-push-apns',
  p2UnregisterApns: 'unregister-push-apns',
} as const;

interface FieldSpec {
  var: string;
  label: string;
  required: boolean;
  /** Other names clients send for this field (p2: `android-id` for `device-id`). */
  aliases?: string[];
}

interface CommandRequest {
  requester: BareJid;
  /** Our own JID as the client addressed it: the pubsub service to name in `<enable/>`. */
  service: string;
  fields: Map<string, string>;
}

type CommandOutcome = Array<{ var: string; value: string }> | IqError;

interface Command {
  node: string;
  name: string;
  fields: FieldSpec[];
  /** Maps the core's field names to this command's (the core says "node" where p2 says "device-id"). */
  fieldNames: Record<string, string>;
  /** Listed in disco#items and executable; false for a p2 command no app is configured for. */
  offered: boolean;
  /** Makes registrations (and counts against the per-JID and per-domain limits). */
  registers: boolean;
  run(request: CommandRequest): Promise<CommandOutcome>;
}

/** What the commands need from the core. */
export type CommandRegistrations = Pick<Registrations, 'register' | 'unregister'>;

export interface CommandsOptions {
  registrations: CommandRegistrations;
  p2: P2DialectConfig;
  logger: Logger;
  /** Registration commands per requesting bare JID and minute; 0 or absent = no limit. */
  perJidPerMinute?: number;
  /** Registration commands per requesting domain and minute; 0 or absent = no limit. */
  perDomainPerMinute?: number;
  now?: () => number;
}

const BAD_PAYLOAD = (): Element => new Element('bad-payload', { xmlns: NS.commands });

/** Push 2.0 (README "Push 2.0"): the client's optional JWT public key … */
const PUSH2_KEY_FIELD = 'push2-key';
const PUSH2_KEY_SPEC: FieldSpec = { var: PUSH2_KEY_FIELD, label: 'Push 2.0 JWT public key (base64 of the P-256 point), optional', required: false };

function push2KeyOf(fields: Map<string, string>): { push2Key?: string } {
  const key = fields.get(PUSH2_KEY_FIELD);
  return key === undefined ? {} : { push2Key: key };
}

/** … and what it puts in its Push 2.0 <enable/>: <service> and <client>. */
function push2Fields(service: string, node: string): Array<{ var: string; value: string }> {
  return [{ var: 'service', value: service }, { var: 'client', value: node }];
}

function failureError(failure: RegistrationFailure, fieldNames: Record<string, string>): IqError {
  switch (failure.code) {
    case 'bad-request': {
      const name = fieldNames[failure.field] ?? failure.field;
      return iqError('modify', 'bad-request', failure.message.replace(`"${failure.field}"`, `"${name}"`), BAD_PAYLOAD());
    }
    case 'unknown-app':
    case 'not-found':
      return iqError('cancel', 'item-not-found', failure.message);
    case 'forbidden':
      return iqError('auth', 'forbidden', failure.message);
    case 'limited':
      return iqError('wait', 'resource-constraint', failure.message);
    case 'unavailable':
      return iqError('wait', 'internal-server-error', failure.message);
  }
}

export class AdHocCommands {
  private readonly commands = new Map<string, Command>();
  private readonly registrations: CommandRegistrations;
  private readonly logger: Logger;
  private readonly perJid: KeyedRateLimiter;
  private readonly perDomain: KeyedRateLimiter;
  private readonly limitedWarning: ThrottledWarning;

  constructor(options: CommandsOptions) {
    this.registrations = options.registrations;
    this.logger = options.logger;
    const jidRate = options.perJidPerMinute ?? 0;
    const domainRate = options.perDomainPerMinute ?? 0;
    this.perJid = new KeyedRateLimiter({ perSecond: jidRate / 60, burst: jidRate, now: options.now });
    this.perDomain = new KeyedRateLimiter({ perSecond: domainRate / 60, burst: domainRate, now: options.now });
    this.limitedWarning = new ThrottledWarning(options.logger, 'ad-hoc registrations refused: over registration.adhoc_per_jid_per_minute or adhoc_per_domain_per_minute');
    for (const command of [
      this.v1Register(),
      this.v1Unregister(),
      this.p2Register(COMMAND_NODES.p2RegisterFcm, 'FCM', options.p2.fcmApp),
      this.p2Unregister(COMMAND_NODES.p2UnregisterFcm, 'FCM', options.p2.fcmApp),
      this.p2Register(COMMAND_NODES.p2RegisterApns, 'APNS', options.p2.apnsApp),
      this.p2Unregister(COMMAND_NODES.p2UnregisterApns, 'APNS', options.p2.apnsApp),
    ]) {
      this.commands.set(command.node, command);
    }
  }

  /** The commands this configuration serves (a p2 command without its app is not one). */
  offered(): Array<{ node: string; name: string }> {
    return [...this.commands.values()].filter((command) => command.offered).map((command) => ({ node: command.node, name: command.name }));
  }

  /** disco#items for node `http://jabber.org/protocol/commands` (XEP-0050 §2.2). */
  items: ItemsProvider = (iq) => {
    const jid = iq.attrs.to ?? '';
    return [...this.commands.values()].filter((command) => command.offered).map((command) => ({ jid, node: command.node, name: command.name }));
  };

  /** `<iq type='set'><command xmlns='http://jabber.org/protocol/commands' node=…/></iq>` */
  execute: IqHandler = async (iq, element) => {
    const node = element.attrs.node;
    const command = node === undefined ? undefined : this.commands.get(node);
    if (!command) return iqError('cancel', 'item-not-found', node === undefined ? 'the command names no node' : `no command "${node}" here`);
    if (!command.offered) return iqError('cancel', 'item-not-found', `no app is configured for "${node}" ([dialects.p2])`);

    const sessionid = element.attrs.sessionid || randomUUID();
    const action = element.attrs.action ?? 'execute';
    if (action === 'cancel') return this.reply(command, sessionid, 'canceled');
    if (action === 'prev') return iqError('modify', 'bad-request', 'this command has a single stage', new Element('bad-action', { xmlns: NS.commands }));
    if (action !== 'execute' && action !== 'complete' && action !== 'next') {
      return iqError('modify', 'bad-request', `unknown action "${action}"`, new Element('malformed-action', { xmlns: NS.commands }));
    }

    const form = findForm(element);
    if (!form) return this.blankForm(command, sessionid);
    if (form.attrs.type === 'cancel') return this.reply(command, sessionid, 'canceled');

    const requester = parseJid(iq.attrs.from ?? '');
    if (!requester) return iqError('modify', 'bad-request', 'the request carries no sender address');
    const submitted = readForm(form).fields;
    const fields = new Map<string, string>();
    for (const spec of command.fields) {
      const value = [spec.var, ...(spec.aliases ?? [])].map((name) => submitted.get(name)?.trim()).find((v) => v !== undefined && v !== '');
      if (value !== undefined) fields.set(spec.var, value);
      else if (spec.required) return iqError('modify', 'bad-request', `missing field "${spec.var}"`, BAD_PAYLOAD());
    }

    if (command.registers) {
      const limited = this.overLimit(requester);
      if (limited) return limited;
    }
    const outcome = await command.run({ requester, service: iq.attrs.to ?? '', fields });
    if (!Array.isArray(outcome)) return outcome;
    return this.reply(command, sessionid, 'completed', buildForm('result', outcome));
  };

  /** Both buckets are charged only when both have room, so one JID's flood does not drain its domain's. */
  private overLimit(requester: BareJid): IqError | undefined {
    const byJid = this.perJid.take(requester.bare);
    const decision = byJid.allowed ? this.perDomain.take(requester.domain) : byJid;
    if (decision.allowed) return undefined;
    this.limitedWarning.note({ jid: requester.bare, by: byJid.allowed ? 'domain' : 'jid' });
    const seconds = Math.max(1, Math.ceil(decision.retryAfterMs / 1000));
    return iqError('wait', 'resource-constraint', `too many registrations from ${byJid.allowed ? requester.domain : requester.bare}: try again in ${seconds} s`);
  }

  private reply(command: Command, sessionid: string, status: 'completed' | 'canceled' | 'executing', payload?: Element): IqHandlerResult {
    const reply = new Element('command', { xmlns: NS.commands, node: command.node, sessionid, status });
    if (payload) reply.cnode(payload);
    return reply;
  }

  /** Executed without a form: ask for the fields (XEP-0050 §3.4, a single-stage command). */
  private blankForm(command: Command, sessionid: string): IqHandlerResult {
    const reply = new Element('command', { xmlns: NS.commands, node: command.node, sessionid, status: 'executing' });
    reply.c('actions', { execute: 'complete' }).c('complete');
    const x = reply.c('x', { xmlns: NS.dataForms, type: 'form' });
    x.c('title').t(command.name);
    for (const field of command.fields) {
      const element = x.c('field', { var: field.var, type: 'text-single', label: field.label });
      if (field.required) element.c('required');
    }
    return reply;
  }

  private logged(command: string, requester: BareJid, result: RegisterResult | UnregisterResult): void {
    if (!result.ok) {
      this.logger.info('ad-hoc command refused', { command, domain: requester.domain, reason: result.failure.message });
    } else if ('registration' in result) {
      this.logger.info(result.created ? 'registered' : 'registration renewed', { command, app: result.registration.app, node: result.registration.node, domain: requester.domain });
    } else {
      this.logger.info('unregistered', { command, node: result.node, domain: requester.domain });
    }
  }

  private v1Register(): Command {
    const fieldNames = { type: 'type', node: 'node', token: 'token', push2_key: PUSH2_KEY_FIELD };
    return {
      node: COMMAND_NODES.v1Register,
      name: 'Register a device for push notifications',
      offered: true,
      registers: true,
      fieldNames,
      fields: [
        { var: 'type', label: 'App (push type)', required: true },
        { var: 'node', label: 'Device id', required: true },
        { var: 'token', label: 'Push token', required: true },
        PUSH2_KEY_SPEC,
      ],
      run: async ({ requester, service, fields }) => {
        const result = await this.registrations.register({
          app: fields.get('type') ?? '',
          deviceId: fields.get('node') ?? '',
          token: fields.get('token') ?? '',
          scope: requester.bare,
          boundDomain: requester.domain,
          dialect: 'xmpp',
          deviceIdAsNode: true,
          ...push2KeyOf(fields),
        });
        this.logged(COMMAND_NODES.v1Register, requester, result);
        if (!result.ok) return failureError(result.failure, fieldNames);
        return [
          { var: 'jid', value: service },
          { var: 'node', value: result.registration.node },
          { var: 'secret', value: result.registration.secret },
          ...push2Fields(service, result.registration.node),
        ];
      },
    };
  }

  private v1Unregister(): Command {
    const fieldNames = { type: 'type', node: 'node' };
    return {
      node: COMMAND_NODES.v1Unregister,
      name: 'Unregister a device from push notifications',
      offered: true,
      registers: false,
      fieldNames,
      fields: [
        { var: 'type', label: 'App (push type)', required: true },
        { var: 'node', label: 'Device id or node', required: true },
      ],
      run: async ({ requester, service, fields }) => {
        const result = await this.registrations.unregister({ app: fields.get('type') ?? '', deviceId: fields.get('node') ?? '', scope: requester.bare, dialect: 'xmpp' });
        this.logged(COMMAND_NODES.v1Unregister, requester, result);
        if (!result.ok) return failureError(result.failure, fieldNames);
        return [
          { var: 'jid', value: service },
          { var: 'node', value: result.node },
        ];
      },
    };
  }

  private p2Fields(withToken: boolean): FieldSpec[] {
    return [
      ...(withToken ? [{ var: 'token', label: 'Push token', required: true }] : []),
      { var: 'device-id', label: 'Device id', required: true, aliases: ['android-id'] },
      { var: 'muc', label: 'Group chat (bare JID), for a separate registration', required: false },
    ];
  }

  /** A p2 `muc` names the room (a bare JID); null when it is absent, an error when it is not one. */
  private static groupOf(fields: Map<string, string>): string | undefined | IqError {
    const muc = fields.get('muc');
    if (muc === undefined) return undefined;
    if (!isBareJid(muc)) return iqError('modify', 'bad-request', 'field "muc" must be a bare JID', BAD_PAYLOAD());
    return parseJid(muc)?.bare;
  }

  private p2Register(node: string, service: string, app: string | undefined): Command {
    const fieldNames = { node: 'device-id', token: 'token', muc: 'muc', type: node, push2_key: PUSH2_KEY_FIELD };
    return {
      node,
      name: `Register a device for ${service} push notifications (p2)`,
      offered: app !== undefined,
      registers: true,
      fieldNames,
      fields: [...this.p2Fields(true), PUSH2_KEY_SPEC],
      run: async ({ requester, service: jid, fields }) => {
        const group = AdHocCommands.groupOf(fields);
        if (typeof group === 'object') return group;
        const result = await this.registrations.register({
          app: app ?? '',
          deviceId: fields.get('device-id') ?? '',
          token: fields.get('token') ?? '',
          scope: requester.bare,
          boundDomain: requester.domain,
          dialect: 'xmpp',
          group,
          ...push2KeyOf(fields),
        });
        this.logged(node, requester, result);
        if (!result.ok) return failureError(result.failure, fieldNames);
        return [
          { var: 'jid', value: jid },
          { var: 'node', value: result.registration.node },
          { var: 'secret', value: result.registration.secret },
          ...push2Fields(jid, result.registration.node),
        ];
      },
    };
  }

  private p2Unregister(node: string, service: string, app: string | undefined): Command {
    const fieldNames = { node: 'device-id', muc: 'muc', type: node };
    return {
      node,
      name: `Unregister a device from ${service} push notifications (p2)`,
      offered: app !== undefined,
      registers: false,
      fieldNames,
      fields: this.p2Fields(false),
      run: async ({ requester, service: jid, fields }) => {
        const group = AdHocCommands.groupOf(fields);
        if (typeof group === 'object') return group;
        const result = await this.registrations.unregister({ app: app ?? '', deviceId: fields.get('device-id') ?? '', scope: requester.bare, group, dialect: 'xmpp' });
        this.logged(node, requester, result);
        if (!result.ok) return failureError(result.failure, fieldNames);
        return [
          { var: 'jid', value: jid },
          { var: 'node', value: result.node },
        ];
      },
    };
  }
}
