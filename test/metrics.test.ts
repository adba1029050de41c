import { randomUUID } from 'node:crypto';
import type { Express } from 'express';
import pino from 'pino';
import request from 'supertest';
import { createApp } from '../src/app';
import type { Env } from '../src/config';
import { createMetrics, type Metrics } from '../src/metrics';
import { createMetricsApp } from '../src/metrics-server';
import type { Lifecycle } from '../src/routes/health';
import { createSessionStore } from '../src/stores';
import type { SessionStore } from '../src/stores/types';
import { cookieHeader, describeWith, listen, RedisServer, shouldSetCookie, testConfig, until } from './helpers';

const silent = pino({ level: 'silent' });
const ADMIN_TOKEN = 'an-admin-token-of-at-least-32-characters';

interface Served {
  /** the public app, for supertest */
  app: Express;
  url: string;
  metricsUrl: string;
  lifecycle: Lifecycle;
  /** every series of a scrape of the metrics listener, by its line's name and labels */
  scrape(): Promise<Map<string, number>>;
}

/** the app and its metrics listener, each on a real socket, as the server wires them; all stopped after the file */
const opened: (() => Promise<void>)[] = [];
afterAll(async () => {
  await Promise.all(opened.splice(0).map((close) => close()));
});

async function served(env: Env = {}): Promise<Served> {
  const config = testConfig({ ADMIN_TOKEN, ...env });
  const metrics: Metrics = createMetrics();
  const sessions: SessionStore = await createSessionStore(config, silent, metrics);
  await sessions.ready();
  const lifecycle: Lifecycle = { stopping: false };
  const rateLimitStore = sessions.rateLimitStore?.();
  const app = createApp({ config, store: sessions.store, rateLimitStore, metrics, lifecycle });
  const loginCounter = config.loginRateLimitPerMinute > 0 ? rateLimitStore : undefined;
  const [publicSide, metricsSide] = [await listen(app), await listen(createMetricsApp(metrics, { store: sessions.store, loginCounter, lifecycle }))];
  opened.push(async () => {
    await Promise.all([publicSide.close(), metricsSide.close()]);
    await sessions.close().catch(() => {});
  });
  return {
    app,
    url: publicSide.url,
    metricsUrl: metricsSide.url,
    lifecycle,
    async scrape() {
      const res = await request(metricsSide.url).get('/metrics').expect(200);
      return parse(res.text);
    },
  };
}

/** Prometheus's text format: `name{labels} value` per line, comments left out */
function parse(text: string): Map<string, number> {
  const series = new Map<string, number>();
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const at = line.lastIndexOf(' ');
    series.set(line.slice(0, at), Number(line.slice(at + 1)));
  }
  return series;
}

/** the series of one metric family, by their lines' names */
const family = (series: Map<string, number>, name: string) => Object.fromEntries([...series].filter(([line]) => line.startsWith(name)));

const requestCount = (method: string, route: string, status: number) =>
  `http_server_request_duration_seconds_count{http_request_method="${method}",http_route="${route}",http_response_status_code="${status}"}`;

async function login(app: Express | string, name: string) {
  const res = await request(app).post(`/login?name=${encodeURIComponent(name)}`).expect(201);
  return cookieHeader(shouldSetCookie(res));
}

describe('the metrics listener', () => {
  it('when logins come to each result, then sessions_logins_total counts each exactly, and the request histogram has their route and status', async () => {
    const { url, scrape } = await served({ LOGIN_RATE_LIMIT_PER_MINUTE: '6', SESSION_MEMORY_MAX: '2' });

    const statuses: number[] = [];
    const post = async (path: string, headers: Record<string, string> = {}) => statuses.push((await request(url).post(path).set(headers)).status);
    // six pass the limit (the store takes two), then two are limited; cross-origin refusals come before the limit
    await post('/login?name=a');
    await post('/login?name=b');
    await post('/login?name=c');
    await post('/login');
    await post('/login?name=%20');
    await post('/login?name=d');
    await post('/login?name=e');
    await post('/login?name=f');
    await post('/login?name=g', { 'Sec-Fetch-Site': 'cross-site' });
    await post('/LOGIN/?name=h', { 'Sec-Fetch-Site': 'same-site' });
    // not logins: another method, another path refused the same way
    await request(url).get('/login').expect(405);
    await request(url).post('/logout').set('Sec-Fetch-Site', 'cross-site').expect(403);
    const series = await scrape();

    expect(statuses).toEqual([201, 201, 503, 400, 400, 503, 429, 429, 403, 403]);
    expect(family(series, 'sessions_logins_total')).toEqual({
      'sessions_logins_total{result="success"}': 2,
      'sessions_logins_total{result="invalid"}': 2,
      'sessions_logins_total{result="rate_limited"}': 2,
      'sessions_logins_total{result="store_full"}': 2,
      'sessions_logins_total{result="store_unavailable"}': 0,
      'sessions_logins_total{result="cross_origin_refused"}': 2,
    });
    expect(series.get(requestCount('POST', '/login', 201))).toBe(2);
    expect(series.get(requestCount('POST', '/login', 503))).toBe(2);
    expect(series.get(requestCount('POST', '/login', 400))).toBe(2);
    expect(series.get(requestCount('POST', '/login', 429))).toBe(2);
    expect(series.get(requestCount('GET', '/login', 405))).toBe(1);
    // refused before routing: no route to name
    expect(series.get(requestCount('POST', 'unmatched', 403))).toBe(3);
    expect(series.get('sessions_active')).toBe(2);
    expect(series.get('sessions_capacity')).toBe(2);
  });

  it('when sessions end each way, then sessions_ended_total counts each reason exactly and sessions_active follows', async () => {
    const { app, scrape } = await served({ SESSION_MAX_PER_USER: '2' });
    const active = async () => (await scrape()).get('sessions_active');

    // a third login of one user ends the least recently seen of her two
    for (let i = 0; i < 3; i++) await login(app, 'eve');
    const afterEve = await active();
    const ann = await login(app, 'ann');
    const annElsewhere = await login(app, 'ann');
    const afterAnn = await active();
    const listed = await request(app).get('/sessions').set('Cookie', ann).expect(200);
    const other = (listed.body as { sessions: { id: string; current: boolean }[] }).sessions.find((s) => !s.current)!;
    await request(app).delete(`/sessions/${other.id}`).set('Cookie', ann).expect(204);
    await request(app).delete('/admin/users/eve/sessions').set('Authorization', `Bearer ${ADMIN_TOKEN}`).expect(200, { ended: 2 });
    await request(app).post('/logout').set('Cookie', ann).expect(204);
    // the one revoked: its next request finds nothing, and ends nothing more
    await request(app).get('/user').set('Cookie', annElsewhere).expect(200, { info: 'No data present in session' });
    const series = await scrape();

    expect([afterEve, afterAnn, series.get('sessions_active')]).toEqual([2, 4, 0]);
    expect(family(series, 'sessions_ended_total')).toEqual({
      'sessions_ended_total{reason="logout"}': 1,
      'sessions_ended_total{reason="revoked"}': 1,
      'sessions_ended_total{reason="revoked_by_admin"}': 2,
      'sessions_ended_total{reason="evicted"}': 1,
      'sessions_ended_total{reason="idle_timeout"}': 0,
      'sessions_ended_total{reason="absolute_timeout"}': 0,
    });
    expect(series.get(requestCount('DELETE', '/sessions/:id', 204))).toBe(1);
    expect(series.get(requestCount('DELETE', '/admin/users/:name/sessions', 200))).toBe(1);
    expect(series.get(requestCount('GET', '/user', 200))).toBe(1);
  });

  it('when one session idles out and another outlives its absolute timeout while in use, then each is counted by its reason', async () => {
    const { app, scrape } = await served({ SESSION_IDLE_TIMEOUT_SECONDS: '1', SESSION_ABSOLUTE_TIMEOUT_SECONDS: '2' });
    await login(app, 'idle');
    const busy = await login(app, 'busy');

    // used every 200 ms, the busy one never idles; the idle one is swept within a second of its timeout
    const started = Date.now();
    while (Date.now() - started < 2500) {
      await request(app).get('/user').set('Cookie', busy);
      await new Promise((resolve) => setTimeout(resolve, 200));
    }
    await until('both to be counted', async () => {
      const series = await scrape();
      return series.get('sessions_ended_total{reason="idle_timeout"}')! + series.get('sessions_ended_total{reason="absolute_timeout"}')! >= 2;
    }, 5000);
    const series = await scrape();

    expect(series.get('sessions_ended_total{reason="idle_timeout"}')).toBe(1);
    expect(series.get('sessions_ended_total{reason="absolute_timeout"}')).toBe(1);
    expect(series.get('sessions_active')).toBe(0);
  });

  it('when 500 requests go to random unknown paths, then the only series they add or change are `unmatched` ones', async () => {
    const { url, scrape } = await served();
    await request(url).get('/user').expect(200);
    const before = await scrape();

    const methods = ['GET', 'POST', 'PUT', 'DELETE', 'PATCH', 'PROPFIND'];
    for (let batch = 0; batch < 10; batch++) {
      await Promise.all(
        Array.from({ length: 50 }, (_, i) => {
          const method = methods[(batch * 50 + i) % methods.length]!;
          return request(url)[method.toLowerCase() as 'get'](`/${randomUUID()}/${i}`).then((res) => res.status);
        }),
      );
    }
    const after = await scrape();

    const requestSeries = (series: Map<string, number>) => [...series.keys()].filter((name) => name.startsWith('http_server_request_duration_seconds'));
    const added = requestSeries(after).filter((name) => !before.has(name));
    const changed = requestSeries(after).filter((name) => before.has(name) && before.get(name) !== after.get(name) && !name.includes('_bucket') && !name.includes('_sum'));
    expect(added.length).toBeGreaterThan(0);
    expect(added.filter((name) => !name.includes('http_route="unmatched"'))).toEqual([]);
    expect(changed).toEqual([]);
    const unmatched = [...after].filter(([name]) => name.includes('_count{') && name.includes('http_route="unmatched"'));
    expect(unmatched.reduce((sum, [, value]) => sum + value, 0)).toBe(500);
    // one label set per method, PROPFIND as `_OTHER`: 15 buckets (+Inf too), a sum and a count each
    const labelSets = new Set(added.map((name) => name.replace(/^[a-z_]+\{(le="[^"]*",)?/, '{')));
    expect([...labelSets].sort()).toEqual(
      ['DELETE', 'GET', 'PATCH', 'POST', 'PUT', '_OTHER'].map((method) => `{http_request_method="${method}",http_route="unmatched",http_response_status_code="404"}`),
    );
    expect(added).toHaveLength(6 * 17);
  });

  it('when /metrics is asked on the public port, then 404; the metrics listener serves it, the health paths and nothing of the app', async () => {
    const { url, metricsUrl } = await served();

    const onPublic = await request(url).get('/metrics');
    const scraped = await request(metricsUrl).get('/metrics');
    const appRoutes = await Promise.all([request(metricsUrl).post('/login?name=x'), request(metricsUrl).get('/user'), request(metricsUrl).get('/')]);

    expect(onPublic.status).toBe(404);
    expect(onPublic.body).toEqual({ error: 'Not found' });
    expect(scraped.status).toBe(200);
    expect(scraped.headers['content-type']).toMatch(/^text\/plain; version=0\.0\.4/);
    expect(scraped.text).toContain('# TYPE http_server_request_duration_seconds histogram');
    expect(scraped.text).toContain('http_server_request_duration_seconds_bucket{le="0.005",http_request_method="GET",http_route="unmatched",http_response_status_code="404"} 1');
    // prom-client's default process and Node.js metrics
    expect(scraped.text).toMatch(/^process_cpu_user_seconds_total \d/m);
    expect(scraped.text).toMatch(/^nodejs_eventloop_lag_seconds \d/m);
    expect(appRoutes.map((res) => res.status)).toEqual([404, 404, 404]);
    expect(scraped.headers['x-request-id']).toMatch(/^[0-9a-f-]{36}$/);
    for (const path of ['/livez', '/readyz', '/healthz']) await request(metricsUrl).get(path).expect(200, { status: 'ok' });
  });

  it('when the page is served, then its files are counted under one route template, never their paths', async () => {
    const { url, scrape } = await served();

    await request(url).get('/').expect(200);
    await request(url).get('/index.html').expect(200);
    const series = await scrape();

    expect(series.get(requestCount('GET', '/{*file}', 200))).toBe(2);
    expect([...series.keys()].filter((name) => name.includes('index.html'))).toEqual([]);
  });

  it('when the store is timed, then each operation has its duration and the errors counter starts at 0', async () => {
    const { app, scrape } = await served();
    const cookie = await login(app, 'timed');
    await request(app).get('/user').set('Cookie', cookie).expect(200);
    const series = await scrape();

    expect(series.get('sessions_store_operation_duration_seconds_count{operation="set",store="memory"}')).toBe(1);
    expect(series.get('sessions_store_operation_duration_seconds_count{operation="get",store="memory"}')).toBe(1);
    expect(series.get('sessions_store_errors_total{operation="get",store="memory"}')).toBe(0);
  });
});

describeWith('redis-server', 'health and store metrics on a real Redis that dies', () => {
  let redis: RedisServer;
  beforeAll(async () => {
    redis = await RedisServer.start();
  });
  afterAll(async () => {
    await redis?.stop();
  });

  it('when Redis is up, then /livez, /readyz and /healthz are 200 on both listeners; when it is killed, /readyz and /healthz are 503, /livez stays 200, logins are store_unavailable and store errors are counted', async () => {
    const { url, metricsUrl, scrape } = await served({ SESSION_STORE: 'redis', REDIS_URL: redis.url, LOGIN_RATE_LIMIT_PER_MINUTE: '100' });
    const health = async () => {
      const answers: Record<string, string> = {};
      for (const [side, base] of [['public', url], ['metrics', metricsUrl]] as const) {
        for (const path of ['/livez', '/readyz', '/healthz']) {
          const res = await request(base).get(path);
          answers[`${side} ${path}`] = `${res.status} ${res.body.status}`;
        }
      }
      return answers;
    };
    const cookie = await login(url, 'redis-user');
    const up = await health();

    await redis.stop();
    const down = await health();
    const refused = await request(url).post('/login?name=late');
    await request(url).get('/user').set('Cookie', cookie).expect(503);
    const series = await scrape();
    await redis.start();

    expect(up).toEqual({
      'public /livez': '200 ok',
      'public /readyz': '200 ok',
      'public /healthz': '200 ok',
      'metrics /livez': '200 ok',
      'metrics /readyz': '200 ok',
      'metrics /healthz': '200 ok',
    });
    expect(down).toEqual({
      'public /livez': '200 ok',
      'public /readyz': '503 unavailable',
      'public /healthz': '503 unavailable',
      'metrics /livez': '200 ok',
      'metrics /readyz': '503 unavailable',
      'metrics /healthz': '503 unavailable',
    });
    expect(refused.status).toBe(503);
    expect(series.get('sessions_logins_total{result="store_unavailable"}')).toBe(1);
    expect(series.get('sessions_logins_total{result="success"}')).toBe(1);
    // the /user read, and the four probes' reads
    expect(series.get('sessions_store_errors_total{operation="get",store="redis"}')).toBe(5);
    expect(series.get('sessions_store_errors_total{operation="count_login",store="redis"}')).toBeGreaterThanOrEqual(1);
    // no store-wide gauge on Redis
    expect(series.has('sessions_active')).toBe(false);
  });
});
