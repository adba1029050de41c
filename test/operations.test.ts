import { once } from 'node:events';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import request from 'supertest';
import { tracingEnvironment } from '../src/tracing';
import { describeWith, freePort, listening, listeningSockets, rawConnection, RedisServer, sleep, startServer, until, type Run } from './helpers';

const PRODUCTION_SECRET = 'a-production-secret-of-well-over-32-characters';

const runs: Run[] = [];
afterEach(() => runs.splice(0).forEach((run) => run.child.exitCode === null && run.child.kill('SIGKILL')));
function start(env: Record<string, string>, nodeArgs: string[] = []): Run {
  const run = startServer(env, nodeArgs);
  runs.push(run);
  return run;
}

describe('the metrics listener of the server process', () => {
  it('when METRICS_PORT is unset, then the process listens on the application port alone', async () => {
    const run = start({ APPLICATION_PORT: String(await freePort()) });
    const port = await listening(run);

    expect(listeningSockets(run.child.pid!).map((socket) => socket.split(':').at(-1))).toEqual([String(port)]);
  });

  it('when METRICS_PORT is set, then a second listener on 127.0.0.1 serves /metrics, and the public port does not', async () => {
    const metricsPort = await freePort();
    const run = start({ APPLICATION_PORT: String(await freePort()), METRICS_PORT: String(metricsPort) });
    const port = await listening(run);
    await until('the metrics listener', async () => (await request(`http://127.0.0.1:${metricsPort}`).get('/livez')).status === 200, 10_000);

    await request(`http://127.0.0.1:${port}`).get('/user').expect(200);
    const scraped = await request(`http://127.0.0.1:${metricsPort}`).get('/metrics').expect(200);
    const onPublic = await request(`http://127.0.0.1:${port}`).get('/metrics');

    expect(listeningSockets(run.child.pid!)).toContain(`127.0.0.1:${metricsPort}`);
    expect(listeningSockets(run.child.pid!)).toHaveLength(2);
    expect(scraped.text).toContain('http_server_request_duration_seconds_count{http_request_method="GET",http_route="/user",http_response_status_code="200"} 1');
    expect(onPublic.status).toBe(404);
  });
});

describe('the metrics listener cannot listen', () => {
  it('when METRICS_PORT is taken, then the process exits 1 naming METRICS_HOST and METRICS_PORT', async () => {
    const taken = net.createServer().listen(0, '127.0.0.1');
    await once(taken, 'listening');
    const { port } = taken.address() as net.AddressInfo;
    try {
      const run = start({ APPLICATION_PORT: String(await freePort()), METRICS_PORT: String(port) });

      const { code } = await run.exited;

      expect(code).toBe(1);
      expect(run.output()).toContain(`Cannot listen on 127.0.0.1:${port} (METRICS_HOST, METRICS_PORT): EADDRINUSE`);
    } finally {
      taken.close();
    }
  });
});

describe('readiness through a shutdown', () => {
  it('when SIGTERM comes while a request is in flight, then /readyz is 503 on both listeners and /livez 200 until that request is answered, and the process exits 0', async () => {
    const metricsPort = await freePort();
    const run = start({ APPLICATION_PORT: String(await freePort()), METRICS_PORT: String(metricsPort) });
    const port = await listening(run);
    const metricsUrl = `http://127.0.0.1:${metricsPort}`;
    await until('the metrics listener', async () => (await request(metricsUrl).get('/readyz')).status === 200, 10_000);
    // two requests whose heads are half sent: the server is mid-request on both
    const inFlight = await rawConnection(port);
    inFlight.write('GET /user HTTP/1.1\r\nHost: localhost\r\n');
    const probe = await rawConnection(port);
    probe.write('GET /readyz HTTP/1.1\r\nHost: localhost\r\n');
    await sleep(200);

    run.child.kill('SIGTERM');
    await sleep(300);
    const [ready, live, healthz] = await Promise.all([request(metricsUrl).get('/readyz'), request(metricsUrl).get('/livez'), request(metricsUrl).get('/healthz')]);
    probe.write('\r\n');
    inFlight.write('\r\n');
    const { code } = await run.exited;

    expect([ready.status, ready.body]).toEqual([503, { status: 'stopping' }]);
    expect([healthz.status, healthz.body]).toEqual([503, { status: 'stopping' }]);
    expect([live.status, live.body]).toEqual([200, { status: 'ok' }]);
    expect(probe.response()).toMatch(/^HTTP\/1\.1 503 /);
    expect(probe.response()).toContain('{"status":"stopping"}');
    expect(inFlight.response()).toMatch(/^HTTP\/1\.1 200 OK/);
    expect(inFlight.response()).toContain('{"info":"No data present in session"}');
    expect(code).toBe(0);
    inFlight.destroy();
    probe.destroy();
  });
});

describe('log formats', () => {
  /** the server at info with `env`, one login with a known request ID, then stopped: what it printed */
  async function loggedRun(env: Record<string, string>): Promise<string> {
    const run = start({ APPLICATION_PORT: String(await freePort()), LOG_LEVEL: 'info', ...env });
    const port = await listening(run);
    await request(`http://127.0.0.1:${port}`).post('/login?name=formatted').set('X-Request-Id', 'format-1').expect(201);
    run.child.kill('SIGTERM');
    await run.exited;
    return run.output();
  }

  const jsonLine = (output: string) =>
    output
      .split('\n')
      .filter((line) => line.startsWith('{'))
      .map((line) => JSON.parse(line) as Record<string, unknown>)
      .find((line) => line.msg === 'request completed');

  it.each([
    ['LOG_FORMAT=json', { LOG_FORMAT: 'json' }],
    ['LOG_FORMAT unset in production', { LOG_FORMAT: '', NODE_ENV: 'production', SESSION_SECRET: PRODUCTION_SECRET, COOKIE_SECURE: 'false' }],
  ])('when %s, then every line is JSON, the request line with its requestId', async (_what, env) => {
    const output = await loggedRun(env);

    expect(jsonLine(output)).toEqual(expect.objectContaining({ level: 30, requestId: 'format-1', req: { method: 'POST', path: '/login' }, res: { status: 201 } }));
    expect(output).not.toMatch(/\] INFO: /);
  });

  it.each([
    ['LOG_FORMAT=pretty', { LOG_FORMAT: 'pretty' }],
    ['LOG_FORMAT unset in development', { LOG_FORMAT: '' }],
  ])('when %s, then the lines are pino-pretty\'s, one per event, with the requestId', async (_what, env) => {
    const output = await loggedRun(env);

    expect(output).toMatch(/^\[\d\d:\d\d:\d\d\.\d{3}\] INFO: session_created .*"requestId":"format-1"/m);
    expect(output).toMatch(/^\[\d\d:\d\d:\d\d\.\d{3}\] INFO: request completed .*"requestId":"format-1"/m);
    expect(jsonLine(output)).toBeUndefined();
  });

  it('when LOG_FORMAT has another value, then start-up stops naming LOG_FORMAT', async () => {
    const run = start({ APPLICATION_PORT: String(await freePort()), LOG_FORMAT: 'xml' });

    const { code } = await run.exited;

    expect(code).toBe(1);
    expect(run.output()).toContain('LOG_FORMAT must be one of pretty, json (got "xml")');
    expect(run.output()).not.toMatch(/Server listening/);
  });
});

/** the OTLP/HTTP JSON body's spans, flattened */
interface Span {
  name: string;
  kind: number;
  traceId: string;
  scope: string;
  service: string;
  attributes: Record<string, unknown>;
}

/** an OTLP/HTTP receiver on a real socket: what an OpenTelemetry collector would be sent */
async function otlpReceiver(): Promise<{ url: string; spans: Span[]; close(): Promise<void> }> {
  const spans: Span[] = [];
  const value = (v: Record<string, unknown>) => v.stringValue ?? (v.intValue === undefined ? v.boolValue : Number(v.intValue));
  const attributes = (list: { key: string; value: Record<string, unknown> }[] = []) => Object.fromEntries(list.map((a) => [a.key, value(a.value)]));
  const server = http.createServer((req, res) => {
    let body = '';
    req.on('data', (chunk: Buffer) => (body += chunk.toString()));
    req.on('end', () => {
      if (req.url === '/v1/traces') {
        const parsed = JSON.parse(body) as {
          resourceSpans: { resource: { attributes: [] }; scopeSpans: { scope: { name: string }; spans: { name: string; kind: number; traceId: string; attributes: [] }[] }[] }[];
        };
        for (const resource of parsed.resourceSpans) {
          const service = String(attributes(resource.resource.attributes)['service.name']);
          for (const scoped of resource.scopeSpans) {
            for (const span of scoped.spans) spans.push({ name: span.name, kind: span.kind, traceId: span.traceId, scope: scoped.scope.name, service, attributes: attributes(span.attributes) });
          }
        }
      }
      res.writeHead(200, { 'Content-Type': 'application/json' }).end('{}');
    });
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address() as net.AddressInfo;
  return { url: `http://127.0.0.1:${port}`, spans, close: () => new Promise((resolve) => server.close(() => resolve())) };
}

describe('tracing', () => {
  it.each([
    ['nothing names the service', {}, 'session-management-app'],
    ['OTEL_SERVICE_NAME is empty', { OTEL_SERVICE_NAME: '' }, 'session-management-app'],
    ['OTEL_SERVICE_NAME names it', { OTEL_SERVICE_NAME: 'sessions-eu' }, 'sessions-eu'],
    ['OTEL_RESOURCE_ATTRIBUTES names it', { OTEL_RESOURCE_ATTRIBUTES: 'deployment.environment=prod,service.name=sessions-us' }, undefined],
  ])('when %s, then the SDK is given the right service name, and neither metrics nor logs', (_what, given, name) => {
    const env: NodeJS.ProcessEnv = { ...given, OTEL_METRICS_EXPORTER: 'otlp' };

    tracingEnvironment(env);

    expect(env.OTEL_SERVICE_NAME || undefined).toBe(name);
    expect([env.OTEL_METRICS_EXPORTER, env.OTEL_LOGS_EXPORTER]).toEqual(['none', 'none']);
  });

  const OPENTELEMETRY_BEYOND_API = /node_modules\/@opentelemetry\/(?!api\/)/;

  /** the modules a server process loaded, from start to exit, with `env` */
  async function loadedModules(env: Record<string, string>): Promise<string[]> {
    const dir = mkdtempSync(path.join(tmpdir(), 'modules-'));
    const file = path.join(dir, 'loaded.json');
    try {
      const run = start({ APPLICATION_PORT: String(await freePort()), LOADED_MODULES_FILE: file, ...env }, ['-r', path.join(__dirname, 'fixtures', 'loaded-modules.js')]);
      const port = await listening(run);
      await request(`http://127.0.0.1:${port}`).get('/user').expect(200);
      run.child.kill('SIGTERM');
      expect((await run.exited).code).toBe(0);
      return JSON.parse(readFileSync(file, 'utf8')) as string[];
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }

  it('when no OTEL_* variable asks for traces, then no OpenTelemetry SDK or instrumentation module is loaded; when one does, they are', async () => {
    const receiver = await otlpReceiver();
    try {
      const off = await loadedModules({});
      const disabled = await loadedModules({ OTEL_TRACES_EXPORTER: 'none' });
      const on = await loadedModules({ OTEL_EXPORTER_OTLP_ENDPOINT: receiver.url, OTEL_EXPORTER_OTLP_PROTOCOL: 'http/json' });

      expect(off.length).toBeGreaterThan(100);
      expect(off.filter((file) => OPENTELEMETRY_BEYOND_API.test(file))).toEqual([]);
      // nor prom-client, without METRICS_PORT
      expect(off.filter((file) => file.includes('node_modules/prom-client/'))).toEqual([]);
      expect(disabled.filter((file) => OPENTELEMETRY_BEYOND_API.test(file))).toEqual([]);
      expect(on.filter((file) => file.includes('node_modules/@opentelemetry/sdk-node/'))).not.toEqual([]);
      expect(on.filter((file) => file.includes('node_modules/@opentelemetry/instrumentation-express/'))).not.toEqual([]);
    } finally {
      await receiver.close();
    }
  });
});

describeWith('redis-server', 'tracing a server on Redis', () => {
  let redis: RedisServer;
  beforeAll(async () => {
    redis = await RedisServer.start();
  });
  afterAll(async () => {
    await redis?.stop();
  });

  it('when OTEL_EXPORTER_OTLP_ENDPOINT is set, then a login is one trace of its HTTP server span, its Express route and its Redis commands, exported over OTLP; probes are not traced', async () => {
    const receiver = await otlpReceiver();
    try {
      const run = start({
        APPLICATION_PORT: String(await freePort()),
        SESSION_STORE: 'redis',
        REDIS_URL: redis.url,
        OTEL_EXPORTER_OTLP_ENDPOINT: receiver.url,
        OTEL_EXPORTER_OTLP_PROTOCOL: 'http/json',
        OTEL_BSP_SCHEDULE_DELAY: '100',
      });
      const port = await listening(run);
      const url = `http://127.0.0.1:${port}`;

      await request(url).post('/login?name=traced').expect(201);
      await request(url).get('/readyz').expect(200);
      run.child.kill('SIGTERM');
      expect((await run.exited).code).toBe(0);

      const spans = receiver.spans;
      const server = spans.find((span) => span.kind === 2 && span.attributes['http.route'] === '/login');
      expect(server).toEqual(expect.objectContaining({ scope: '@opentelemetry/instrumentation-http', service: 'session-management-app' }));
      const trace = spans.filter((span) => span.traceId === server!.traceId);
      expect(trace).toContainEqual(expect.objectContaining({ scope: '@opentelemetry/instrumentation-express', attributes: expect.objectContaining({ 'http.route': '/login' }) }));
      const commands = trace.filter((span) => span.scope === '@opentelemetry/instrumentation-redis').map((span) => span.name);
      expect(commands.length).toBeGreaterThan(0);
      expect(spans.filter((span) => span.kind === 2 && JSON.stringify(span.attributes).includes('readyz'))).toEqual([]);
    } finally {
      await receiver.close();
    }
  });
});
