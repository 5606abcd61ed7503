/**
 * Every push service we speak, by the name an app's `provider = "…"` uses. Adding a service is
 * one file implementing ProviderFactory and one line here.
 */
import type { ProviderFactory } from './types.ts';
import { logProvider } from './log.ts';
import { webPushProvider } from './webpush.ts';
import { unifiedPushProvider } from './unifiedpush.ts';
import { fcmProvider } from './fcm.ts';
import { apnsProvider } from './apns.ts';

export const providerFactories: Readonly<Record<string, ProviderFactory<any>>> = {
  log: logProvider,
  webpush: webPushProvider,
  unifiedpush: unifiedPushProvider,
  fcm: fcmProvider,
  apns: apnsProvider,
};

export function providerNames(): string[] {
  return Object.keys(providerFactories).sort();
}
