/**
 * The real Prosody mod_push2 (Push 2.0's reference user's-server side) for integration tests: the
 * copy and the Prosody 0.12 shims in ../shared/interop/prosody-mod_push2/ (its README says how),
 * loaded into a test Prosody by startProsody's options. Needs Debian's `lua-luaossl`. A missing part
 * fails the tests with how to install it (never a skip), unless PUSH_APPSERVER_TEST_SKIP_INTEGRATION=1
 * opts out loudly (see real-parts.ts).
 */
import { existsSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { xml } from '@xmpp/client';
import type { Element } from 'ltx';
import type { ProsodyOptions } from './prosody.ts';
import { prosodyAvailable } from './prosody.ts';
import { integrationSkipped, missingPart } from './real-parts.ts';
import type { JwtKeyPair, UserAgentKeys } from './push2.ts';

const ROOT = resolve(import.meta.dirname, '../../..');
/** Worktrees sit two levels below the checkout that holds `shared/`; a plain checkout one. */
const CANDIDATES = [resolve(ROOT, '../shared/interop/prosody-mod_push2'), resolve(ROOT, 'shared/interop/prosody-mod_push2'), '/work/shared/interop/prosody-mod_push2'];

export const MOD_PUSH2_DIR = process.env.MOD_PUSH2_DIR ?? CANDIDATES.find((dir) => existsSync(join(dir, 'mod_push2', 'mod_push2.lua'))) ?? CANDIDATES[0];

const LUAOSSL = ['/usr/lib/x86_64-linux-gnu/lua/5.4/_openssl.so', '/usr/share/lua/5.4/openssl.lua'];

function luaosslInstalled(): boolean {
  return LUAOSSL.some((path) => existsSync(path)) || existsSync('/usr/share/doc/lua-luaossl');
}

export function modPush2Available(): boolean {
  return prosodyAvailable() && existsSync(join(MOD_PUSH2_DIR, 'mod_push2', 'mod_push2.lua')) && luaosslInstalled();
}

/**
 * For `describe(…, { skip })`: false (run, and fail in `modPush2ProsodyOptions` when a part is
 * missing) unless the developer opted out of integration tests explicitly.
 */
export function modPush2Missing(): string | false {
  return integrationSkipped('a real Prosody with mod_push2 and lua-luaossl');
}

/** startProsody options that load mod_push2 on every VirtualHost. */
export function modPush2ProsodyOptions(options: ProsodyOptions = {}): ProsodyOptions {
  if (!modPush2Available()) {
    throw missingPart(`Prosody, lua-luaossl or mod_push2 (${MOD_PUSH2_DIR})`, 'apt-get install prosody lua-luaossl, and the mod_push2 copy in shared/interop/prosody-mod_push2 (or MOD_PUSH2_DIR)');
  }
  const lua = (value: string) => JSON.stringify(value);
  return {
    ...options,
    extraHostModules: [...(options.extraHostModules ?? []), 'push2'],
    extraGlobalConfig: `${options.extraGlobalConfig ?? ''}\nplugin_paths = { ${lua(MOD_PUSH2_DIR)} }\n`,
    extraHostConfig: `${options.extraHostConfig ?? ''}\n  contact_uri = "mailto:ops@example.test"\n`,
    env: { ...options.env, LUA_PATH_5_4: `${join(MOD_PUSH2_DIR, 'shims')}/?.lua;;` },
  };
}

/** The client's Push 2.0 <enable/> (urn:xmpp:push2:0), with the sce+rfc8291+rfc8292 send profile. */
export function push2Enable(options: { service: string; client: string; ua: UserAgentKeys; jwt: JwtKeyPair; audience: string; profile?: string }): Element {
  return xml('iq', { type: 'set' },
    xml('enable', { xmlns: 'urn:xmpp:push2:0' },
      xml('service', {}, options.service),
      xml('client', {}, options.client),
      xml('match', { profile: options.profile ?? 'urn:xmpp:push2:match:important' },
        xml('send', { xmlns: 'urn:xmpp:push2:send:sce+rfc8291+rfc8292:0' },
          xml('ua-public', {}, options.ua.publicKey.toString('base64')),
          xml('auth-secret', {}, options.ua.authSecret.toString('base64')),
          xml('jwt-alg', {}, 'ES256'),
          xml('jwt-key', {}, options.jwt.pkcs8Base64),
          xml('jwt-claim', { name: 'aud' }, options.audience)))));
}
