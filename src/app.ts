/**
 * The composition root: config → store → providers → core → transports, and the orderly stop.
 * Nothing else constructs these pieces, so tests and the CLI start exactly what operators run.
 */
import type { AddressInfo } from 'node:net';
import type { Config } from './config/schema.ts';
import { DEFAULT_COMPONENT_SECRET } from './config/schema.ts';
import { AppDirectory, type App } from './core/apps.ts';
import { Dispatcher } from './core/dispatcher.ts';
import { ExpirySweeper } from './core/expiry.ts';
import { Push2Resolver, PUSH2_NS } from './core/push2.ts';
import { Registrations } from './core/registrations.ts';
import { RegisteredNodes } from './core/resolvers/registered.ts';
import { StatelessDialect } from './core/stateless.ts';
import { addV1Routes, type HealthReport } from './http/v1.ts';
import { addOpsRoutes } from './http/ops.ts';
import { addAdminRoutes } from './http/admin/routes.ts';
import { apnsCertificateExpiries, type CredentialsExpiry } from './ops/credentials.ts';
import { fanOut, PrometheusTelemetry } from './ops/metrics.ts';
import { RecentActivity } from './ops/recent.ts';
import type { Telemetry } from './core/telemetry.ts';
import { HttpServer } from './http/server.ts';
import type { Logger } from './log.ts';
import type { ApnsConfig } from './providers/apns.ts';
import { providerFactories } from './providers/registry.ts';
import { openStore } from './store/open.ts';
import type { Store } from './store/types.ts';
import { AdHocCommands } from './xmpp/handlers/commands.ts';
import { push2Handler } from './xmpp/handlers/push2.ts';
import { XmppService } from './xmpp/service.ts';

/** Validates every app's provider settings (what check-config runs) and returns them parsed. */
export function parseAppSettings(config: Config): Map<string, unknown> {
  const parsed = new Map<string, unknown>();
  for (const app of config.apps.values()) {
    const factory = providerFactories[app.provider];
    if (!factory) {
      app.settings.fail('provider', `unknown provider "${app.provider}" (known: ${Object.keys(providerFactories).sort().join(', ')})`);
    }
    app.settings.skip('provider');
    app.settings.skip('stateless');
    app.settings.skip('push2_stateless');
    app.settings.skip('allowed_domains');
    app.settings.skip('allowed_ports');
    parsed.set(app.name, factory.parseConfig(app.settings));
  }
  return parsed;
}

export function createApps(config: Config, logger: Logger): AppDirectory {
  const settings = parseAppSettings(config);
  const apps: App[] = [];
  for (const app of config.apps.values()) {
    const parsed = settings.get(app.name);
    const provider = providerFactories[app.provider].create(parsed, { app: app.name, logger: logger.child(`app:${app.name}`) });
    const apnsTopic = app.provider === 'apns' ? (parsed as ApnsConfig).topic : undefined;
    // What retries need to know of the provider's settings: whether the body is sent, and its ttl.
    const { includeBody, ttlSeconds } = (parsed ?? {}) as { includeBody?: unknown; ttlSeconds?: unknown };
    apps.push({
      name: app.name,
      providerKind: app.provider,
      provider,
      stateless: app.stateless,
      push2Stateless: app.push2Stateless,
      apnsTopic,
      allowedDomains: app.allowedDomains,
      includeBody: includeBody === true,
      ttlSeconds: typeof ttlSeconds === 'number' ? ttlSeconds : undefined,
    });
  }
  return new AppDirectory(apps);
}

export class PushAppServer {
  readonly config: Config;
  readonly store: Store;
  readonly apps: AppDirectory;
  readonly registrations: Registrations;
  readonly dispatcher: Dispatcher;
  readonly xmpp: XmppService;
  readonly http: HttpServer | undefined;
  readonly expiry: ExpirySweeper;
  private recountTimer: NodeJS.Timeout | undefined;
  httpAddress: AddressInfo | undefined;
  /** Undefined with `metrics.enabled = false`. */
  readonly metrics: PrometheusTelemetry | undefined;
  /** The last hour per app, for the admin page. */
  readonly recent = new RecentActivity();
  readonly telemetry: Telemetry;
  readonly credentialsExpiry: CredentialsExpiry[];
  private readonly logger: Logger;
  private stopping: Promise<void> | undefined;

  private constructor(config: Config, store: Store, apps: AppDirectory, logger: Logger) {
    this.config = config;
    this.store = store;
    this.apps = apps;
    this.logger = logger;
    this.credentialsExpiry = apnsCertificateExpiries(config);
    this.metrics = config.metrics.enabled ? new PrometheusTelemetry({
      sources: {
        componentConnected: () => this.xmpp.component.state === 'online',
        appsDegraded: () => this.apps.all().map((app) => ({ app: app.name, degraded: app.provider.status().state !== 'ok' })),
        credentialsExpiry: () => this.credentialsExpiry,
      },
    }) : undefined;
    this.telemetry = this.metrics ? fanOut(this.metrics, this.recent) : this.recent;
    this.registrations = new Registrations(store, apps, Date.now, {
      maxPerJid: config.registration.maxPerJid,
      allowedDomains: (app) => config.apps.get(app)?.allowedDomains,
      telemetry: this.telemetry,
      logger,
    });
    this.expiry = new ExpirySweeper(store, logger.child('expiry'), {
      expireDays: config.registration.expireDays,
      onRemoved: () => {
        if (this.metrics) store.countByApp().then((counts) => this.metrics!.registrationsExpired(counts), (error) => logger.warn('cannot recount registrations after expiry', { error }));
      },
    });
    this.dispatcher = new Dispatcher(store, apps, logger.child('dispatch'), {
      timeoutMs: config.push.timeoutMs,
      maxInFlight: config.push.maxInFlight,
      retryMaxAttempts: config.push.retryMaxAttempts,
      retryMaxDelayMs: config.push.retryMaxDelayS * 1000,
      telemetry: this.telemetry,
      retryMaxAgeMs: config.push.retryMaxAgeS * 1000,
      retryMaxBackoffMs: config.push.retryMaxBackoffS * 1000,
      minIntervalMs: config.push.minIntervalMs,
      shutdownTimeoutMs: config.push.shutdownTimeoutMs,
      deadTokenThreshold: config.push.deadTokenThreshold,
      deadTokenWindowMs: config.push.deadTokenWindowS * 1000,
      maxPublishesPerDomainPerS: config.push.maxPublishesPerDomainPerS,
      publishBurstPerDomain: config.push.publishBurstPerDomain,
      maxStatelessPerDomainPerS: config.push.maxStatelessPerDomainPerS,
      statelessBurstPerDomain: config.push.statelessBurstPerDomain,
      maxStatelessInFlight: config.push.maxStatelessInFlight,
    });
    // Asked in this order: a stored node wins over the stateless reading of the same publish.
    this.dispatcher.addResolver(new RegisteredNodes(store, apps, logger.child('dispatch'), Date.now, this.telemetry));
    this.dispatcher.addResolver(new StatelessDialect(store, apps, logger.child('stateless')));
    this.dispatcher.addResolver(new Push2Resolver(store, apps, logger.child('push2'), { audiences: config.push2.audiences, clockSkewS: config.push2.clockSkewS, telemetry: this.telemetry }));
    this.xmpp = new XmppService({
      jid: config.xmpp.componentJid,
      host: config.xmpp.serverHost,
      port: config.xmpp.serverPort,
      secret: config.xmpp.componentSecret,
      reconnectInitialMs: config.xmpp.reconnectInitialMs,
      reconnectMaxMs: config.xmpp.reconnectMaxMs,
      authFailureRetryMs: config.xmpp.authFailureRetryMs,
      maxStanzaBytes: config.xmpp.maxStanzaBytes,
      connectTimeoutMs: config.xmpp.connectTimeoutMs,
      stableAfterMs: config.xmpp.stableAfterMs,
      maxOutboxBytes: config.xmpp.maxOutboxBytes,
      readCoalesceMs: config.xmpp.readCoalesceMs,
    }, this.dispatcher, logger.child('xmpp'));
    let wasOnline = false;
    this.xmpp.component.on('online', () => {
      if (wasOnline) this.metrics?.componentReconnected();
      wasOnline = true;
    });
    this.xmpp.useCommands(new AdHocCommands({
      registrations: this.registrations,
      p2: config.p2,
      logger: logger.child('commands'),
      perJidPerMinute: config.registration.adhocPerJidPerMinute,
      perDomainPerMinute: config.registration.adhocPerDomainPerMinute,
    }));
    this.xmpp.useMessages(PUSH2_NS, push2Handler(this.dispatcher, logger.child('push2')));
    if (config.http.enabled) {
      this.http = new HttpServer(logger.child('http'), config.http.maxBodyBytes);
      addV1Routes(this.http, {
        registrations: this.registrations,
        dispatcher: this.dispatcher,
        store,
        health: () => this.health(),
        debug: config.http.debug,
        adminToken: config.http.adminToken,
        trustProxy: config.http.trustProxy,
        registrationsPerIpPerMinute: config.registration.httpPerIpPerMinute,
        logger: logger.child('http'),
      });
      addOpsRoutes(this.http, {
        adminToken: config.http.adminToken,
        readiness: {
          component: () => this.xmpp.component,
          store,
          apps: () => this.apps.all().map((app) => ({ name: app.name, providerKind: app.providerKind, status: app.provider.status() })),
          credentialsExpiry: () => this.credentialsExpiry,
        },
        metrics: this.metrics ? { text: () => this.metrics!.metrics(), contentType: this.metrics.contentType, token: config.metrics.token } : undefined,
      });
      if (config.http.adminToken !== undefined) {
        addAdminRoutes(this.http, {
          adminToken: config.http.adminToken,
          store,
          apps,
          recent: this.recent,
          component: () => this.xmpp.component,
          componentJid: config.xmpp.componentJid,
          credentialsExpiry: () => this.credentialsExpiry,
          pushTimeoutMs: config.push.timeoutMs,
          telemetry: this.telemetry,
          logger: logger.child('admin'),
          trustProxy: config.http.trustProxy,
        });
      }
    }
  }

  static async start(config: Config, logger: Logger): Promise<PushAppServer> {
    const apps = createApps(config, logger);
    let store: Store;
    try {
      store = await openStore(config.storage.url, logger.child('store'), { poolSize: config.storage.poolSize });
    } catch (error) {
      await apps.close();
      throw error;
    }
    const server = new PushAppServer(config, store, apps, logger);
    // Counted once; registration events keep the gauge from here on.
    server.metrics?.setRegistrationCounts(await store.countByApp(), apps.names());
    server.telemetry.retriesPending(await store.countRetries());
    try {
      if (server.http) {
        server.httpAddress = await server.http.listen(config.http.host, config.http.port);
        logger.info('HTTP API listening', { url: `http://${config.http.host}:${server.httpAddress.port}/push_appserver/v1/` });
        if (config.http.debug) {
          logger.warn('http.debug is on: /push_appserver/v1/settings lists registrations (with the admin token)');
        }
      }
    } catch (error) {
      await store.close();
      await apps.close();
      throw new Error(`cannot listen on http ${config.http.host}:${config.http.port}: ${(error as Error).message}`);
    }
    if (config.xmpp.componentSecret === DEFAULT_COMPONENT_SECRET) {
      logger.warn('xmpp.component_secret is the built-in default; set your own in the config file');
    }
    server.dispatcher.startRetryLoop();
    server.expiry.start();
    server.startRegistrationRecount(config.metrics.registrationsRecountS * 1000);
    server.xmpp.start();
    logger.info('push-appserver started', {
      config: config.source,
      component: config.xmpp.componentJid,
      xmpp_server: `${config.xmpp.serverHost}:${config.xmpp.serverPort}`,
      storage: store.kind,
      apps: apps.all().map((app) => `${app.name}=${app.providerKind}`).join(','),
    });
    return server;
  }

  /** The gauge from the store itself now and then: other instances and the CLI change registrations too. */
  private startRegistrationRecount(everyMs: number): void {
    const metrics = this.metrics;
    if (!metrics) return;
    let counting = false;
    this.recountTimer = setInterval(() => {
      if (counting) return;
      counting = true;
      this.store.countByApp().then(
        (counts) => metrics.setRegistrationCounts(counts, this.apps.names()),
        (error: unknown) => this.logger.debug('cannot recount registrations for the gauge', { error: (error as Error).message }),
      ).finally(() => { counting = false; });
    }, everyMs);
    this.recountTimer.unref();
  }

  async health(): Promise<HealthReport> {
    const component = this.xmpp.component;
    let storeOk = true;
    let storeError: string | undefined;
    try {
      await this.store.ping();
    } catch (error) {
      storeOk = false;
      storeError = (error as Error).message;
    }
    const storeHealth = this.store.health?.();
    if (storeOk && storeHealth?.state === 'degraded') {
      storeOk = false;
      storeError = storeHealth.detail;
    }
    const apps: Record<string, unknown> = {};
    let appsOk = true;
    for (const app of this.apps.all()) {
      const status = this.dispatcher.appStatus(app.name) ?? app.provider.status();
      if (status.state !== 'ok') appsOk = false;
      apps[app.name] = { provider: app.providerKind, ...status };
    }
    const online = component.state === 'online';
    return {
      status: online && storeOk && appsOk ? 'running' : 'degraded',
      component: {
        jid: this.config.xmpp.componentJid,
        state: component.state,
        since: component.connectedSince ? new Date(component.connectedSince).toISOString() : undefined,
        last_error: component.lastError,
      },
      store: { kind: this.store.kind, state: storeOk ? 'ok' : storeHealth?.state === 'degraded' ? 'degraded' : 'failing', error: storeError },
      apps,
    };
  }

  /**
   * Graceful stop: publishes are answered `wait` from now on, pushes on their way get
   * push.shutdown_timeout_ms to finish, the rest is kept as retries; then everything closes.
   */
  stop(): Promise<void> {
    this.stopping ??= (async () => {
      this.logger.info('stopping');
      clearInterval(this.recountTimer);
      const dispatching = this.dispatcher.close();
      await this.http?.close();
      await this.expiry.stop();
      await dispatching;
      await this.xmpp.stop();
      await this.apps.close();
      await this.store.close();
      this.logger.info('stopped');
    })();
    return this.stopping;
  }
}
