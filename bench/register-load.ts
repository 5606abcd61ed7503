/**
 * The registration phase: N devices through the original HTTP API (`POST /push_appserver/v1/register`
 * with form fields type, node, token → `OK\nnode\nsecret`), C requests in flight over keep-alive
 * connections, as a fleet of app clients would. The first `warmup` registrations are not timed.
 */
import { Agent, request } from 'node:http';
import { ErrorTally, Samples } from './stats.ts';

export interface RegisteredDevice {
  node: string;
  secret: string;
  token: string;
}

export interface RegisterPhaseOptions {
  baseUrl: string;
  app: string;
  devices: number;
  concurrency: number;
  warmup: number;
  deadline: number;
  token(index: number): string;
  deviceId(index: number): string;
}

export interface RegisterPhaseResult {
  devices: RegisteredDevice[];
  timed: number;
  elapsedS: number;
  perSecond: number;
  latency: Samples;
  errors: ErrorTally;
  errorSamples: Map<string, string>;
}

export async function runRegisterPhase(options: RegisterPhaseOptions): Promise<RegisterPhaseResult> {
  const agent = new Agent({ keepAlive: true, maxSockets: options.concurrency, maxFreeSockets: options.concurrency });
  const url = new URL('/push_appserver/v1/register', options.baseUrl);
  const devices: RegisteredDevice[] = new Array(options.devices);
  const latency = new Samples();
  const errors = new ErrorTally();
  const errorSamples = new Map<string, string>();
  let next = 0;
  let completed = 0;
  let timedStart = 0;
  let timedEnd = 0;
  const fail = (type: string, detail: string) => {
    errors.add(type);
    if (!errorSamples.has(type)) errorSamples.set(type, detail);
  };

  const registerOne = (index: number): Promise<void> => new Promise((resolve) => {
    const body = `type=${encodeURIComponent(options.app)}&node=${encodeURIComponent(options.deviceId(index))}&token=${encodeURIComponent(options.token(index))}`;
    const started = performance.now();
    if (index === options.warmup) timedStart = started;
    const req = request(url, {
      method: 'POST',
      agent,
      headers: { 'content-type': 'application/x-www-form-urlencoded', 'content-length': Buffer.byteLength(body) },
    }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => { text += chunk; });
      res.on('end', () => {
        const finished = performance.now();
        const lines = text.split('\n');
        if (res.statusCode === 200 && lines[0] === 'OK' && lines[1] && lines[2]) {
          devices[index] = { node: lines[1], secret: lines[2], token: options.token(index) };
        } else {
          fail(`http-${res.statusCode}`, text.trim().replace(/\n/g, ' ').slice(0, 200));
        }
        if (index >= options.warmup) {
          latency.add(finished - started);
          timedEnd = finished;
        }
        completed += 1;
        resolve();
      });
      res.on('error', (error) => {
        fail('http-response-error', error.message);
        resolve();
      });
    });
    req.on('error', (error) => {
      fail(`network:${(error as NodeJS.ErrnoException).code ?? 'error'}`, error.message);
      resolve();
    });
    req.end(body);
  });

  const worker = async () => {
    while (next < options.devices && Date.now() < options.deadline) {
      await registerOne(next++);
    }
  };
  await Promise.all(Array.from({ length: Math.min(options.concurrency, options.devices) }, worker));
  agent.destroy();
  const unfinished = options.devices - completed;
  if (unfinished > 0) errors.add('register-not-attempted-before-deadline', unfinished);

  const timed = Math.max(0, completed - Math.min(options.warmup, completed));
  const elapsedS = timed > 0 ? (timedEnd - timedStart) / 1000 : 0;
  return {
    devices: devices.filter((device) => device !== undefined),
    timed,
    elapsedS,
    perSecond: elapsedS > 0 ? timed / elapsedS : 0,
    latency,
    errors,
    errorSamples,
  };
}
