import type { SessionData } from 'express-session';
import pino from 'pino';
import { createClient } from 'redis';
import request from 'supertest';
import type { Env } from '../src/config';
import { createApp } from '../src/app';
import { createSessionStore, type SessionStore } from '../src/store';
import {
  cookieHeader,
  describeWith,
  freePort,
  listening,
  logoutRacingReads,
  RedisServer,
  sessionId,
  shouldSetCookie,
  sleep,
  startServer,
  testConfig,
} from './helpers';

const silent = pino({ level: 'silent' });

describeWith('redis-server', 'sessions in a real Redis', () => {
  let redis: RedisServer;
  let inspector: ReturnType<typeof createClient>;
  const opened: SessionStore[] = [];

  beforeAll(async () => {
    redis = await RedisServer.start();
    inspector = createClient({ url: redis.url });
    inspector.on('error', () => {});
    await inspector.connect();
  });

  afterAll(async () => {
    await Promise.all(opened.map((sessions) => sessions.close().catch(() => {})));
    inspector.destroy();
    await redis.stop();
  });

  /** one app instance, with a Redis client of its own, as a separate process would have */
  async function instance(env: Env = {}) {
    const config = testConfig({ SESSION_STORE: 'redis', REDIS_URL: redis.url, ...env });
    const sessions = await createSessionStore(config, silent);
    await sessions.ready();
    opened.push(sessions);
    return { app: createApp({ config, store: sessions.store, rateLimitStore: sessions.rateLimitStore?.() }), sessions };
  }

  async function login(app: Parameters<typeof request>[0], name = 'daniel') {
    const res = await request(app).post(`/login?name=${name}`).expect(201);
    const cookie = shouldSetCookie(res);
    return { header: cookieHeader(cookie), key: `sess:${sessionId(cookie)}` };
  }

  it('when a user logs in on A, then B reads the user, and a logout on B is seen on A', async () => {
    const a = await instance();
    const b = await instance();
    const { header } = await login(a.app);

    const onB = await request(b.app).get('/user').set('Cookie', header);
    await request(b.app).post('/logout').set('Cookie', header).expect(204);
    const onA = await request(a.app).get('/user').set('Cookie', header);

    expect(onB.body).toEqual({ info: 'User profile info', data: { name: 'daniel' } });
    expect(onA.body).toEqual({ info: 'No data present in session' });
  });

  it('when a session is stored, then its key carries a TTL equal to the idle timeout', async () => {
    const { app } = await instance({ SESSION_IDLE_TIMEOUT_SECONDS: '120' });
    const { key } = await login(app);

    const ttl = await inspector.ttl(key);

    expect(ttl).toBeGreaterThan(115);
    expect(ttl).toBeLessThanOrEqual(120);
  });

  it('when the session is used, then its TTL is pushed back to the full idle timeout', async () => {
    const { app } = await instance({ SESSION_IDLE_TIMEOUT_SECONDS: '20' });
    const { header, key } = await login(app);
    await sleep(2100);
    const before = await inspector.ttl(key);

    await request(app).get('/user').set('Cookie', header).expect(200);

    expect(before).toBeLessThanOrEqual(18);
    expect(await inspector.ttl(key)).toBeGreaterThanOrEqual(19);
  });

  it('when the absolute timeout is nearer than the idle one, then the TTL follows the absolute timeout', async () => {
    const { app } = await instance({ SESSION_IDLE_TIMEOUT_SECONDS: '600', SESSION_ABSOLUTE_TIMEOUT_SECONDS: '30' });
    const { key } = await login(app);

    expect(await inspector.ttl(key)).toBeLessThanOrEqual(30);
  });

  it('when idle past the timeout, then Redis has dropped the session and the app reads no data', async () => {
    const { app } = await instance({ SESSION_IDLE_TIMEOUT_SECONDS: '1' });
    const { header, key } = await login(app);

    await sleep(2100);

    expect(await inspector.exists(key)).toBe(0);
    expect((await request(app).get('/user').set('Cookie', header)).body).toEqual({ info: 'No data present in session' });
  });

  it('when the instance that made the session restarts, then the session survives', async () => {
    const first = await instance();
    const { header } = await login(first.app);
    await first.sessions.close();

    const second = await instance();
    const res = await request(second.app).get('/user').set('Cookie', header);

    expect(res.body.data).toEqual({ name: 'daniel' });
  });

  it('when a cookie was signed under a secret now listed second, then another instance still accepts it', async () => {
    const old = await instance({ SESSION_SECRET: 'old-secret' });
    const rotated = await instance({ SESSION_SECRET: 'new-secret,old-secret' });
    const { header } = await login(old.app);

    const res = await request(rotated.app).get('/user').set('Cookie', header);

    expect(res.body.data).toEqual({ name: 'daniel' });
  });

  it.each([
    ['reads', 0],
    ['reads that renew the cookie (and so save the session)', 300],
  ])('when a logout races %s of the same session, then it is not brought back', async (_what, waitMs) => {
    const a = await instance({ SESSION_IDLE_TIMEOUT_SECONDS: '2' });

    const cookie = await logoutRacingReads(a.app, { waitMs });

    expect((await request(a.app).get('/user').set('Cookie', cookie)).body).toEqual({ info: 'No data present in session' });
    expect(await inspector.keys('sess:*')).not.toContain(cookie);
    const id = /s%3A([^.]+)\./.exec(cookie)?.[1];
    expect(await inspector.exists(`sess:${id}`)).toBe(0);
  });

  it('when a renewal is saved after its session was destroyed, then the session is not recreated', async () => {
    const { sessions } = await instance();
    const loginAt = Date.now();
    const sess = { cookie: { expires: new Date(loginAt + 60_000), originalMaxAge: 60_000 }, user: { name: 'x' }, loginAt, cookieRenewedAt: loginAt } as SessionData;
    const call = (fn: (done: (err?: unknown) => void) => void) => new Promise<void>((resolve, reject) => fn((err) => (err ? reject(err) : resolve())));
    await call((done) => sessions.store.set('renewed', sess, done));
    await call((done) => sessions.store.destroy('renewed', done));

    await call((done) => sessions.store.set('renewed', { ...sess, cookieRenewedAt: loginAt + 1000 } as SessionData, done));

    expect(await inspector.exists('sess:renewed')).toBe(0);
  });

  it('when instances share Redis, then the login limit is one budget per client across all of them', async () => {
    const stale = await inspector.keys('rl:login:*');
    if (stale.length > 0) await inspector.del(stale);
    const a = await instance({ LOGIN_RATE_LIMIT_PER_MINUTE: '2' });
    const b = await instance({ LOGIN_RATE_LIMIT_PER_MINUTE: '2' });

    const statuses = [];
    for (const app of [a.app, b.app, a.app, b.app]) statuses.push((await request(app).post('/login?name=daniel')).status);

    expect(statuses).toEqual([201, 201, 429, 429]);
    expect(await inspector.keys('rl:login:*')).toHaveLength(1);
  });

  it('when /healthz is asked, then it answers from a real round trip', async () => {
    const { app } = await instance();

    const res = await request(app).get('/healthz');

    expect(res.status).toBe(200);
    expect(res.body).toEqual({ status: 'ok' });
  });
});

describeWith('redis-server', 'a Redis outage', () => {
  let redis: RedisServer;
  let sessions: SessionStore;
  const unhandled: unknown[] = [];
  const onUnhandled = (reason: unknown) => unhandled.push(reason);

  beforeAll(async () => {
    process.on('unhandledRejection', onUnhandled);
    redis = await RedisServer.start();
  });

  afterAll(async () => {
    process.off('unhandledRejection', onUnhandled);
    await sessions?.close().catch(() => {});
    await redis.stop();
  });

  it('when Redis dies, then every request is answered 503 within 5 s; when it returns, the server recovers by itself', async () => {
    // the login limit counts in Redis too: it must fail the same clean way
    const config = testConfig({ SESSION_STORE: 'redis', REDIS_URL: redis.url, LOGIN_RATE_LIMIT_PER_MINUTE: '100' });
    sessions = await createSessionStore(config, silent);
    await sessions.ready();
    const app = createApp({ config, store: sessions.store, rateLimitStore: sessions.rateLimitStore?.() });
    const header = cookieHeader(shouldSetCookie(await request(app).post('/login?name=daniel').expect(201)));

    await redis.stop();
    const started = Date.now();
    const [user, loginRes, logout, health] = await Promise.all([
      request(app).get('/user').set('Cookie', header),
      request(app).post('/login?name=eve'),
      request(app).post('/logout').set('Cookie', header),
      request(app).get('/healthz'),
    ]);
    const elapsed = Date.now() - started;

    expect(elapsed).toBeLessThan(5000);
    for (const res of [user, loginRes, logout]) {
      expect(res.status).toBe(503);
      expect(res.body).toEqual({ error: expect.stringMatching(/session store unavailable/i) });
    }
    expect(health.status).toBe(503);
    expect(health.body).toEqual({ status: 'unavailable' });
    shouldNotSetCookieOn(loginRes);

    await redis.start();
    let healthy = false;
    for (let waited = 0; waited < 10_000 && !healthy; waited += 200) {
      healthy = (await request(app).get('/healthz')).status === 200;
      if (!healthy) await sleep(200);
    }

    expect(healthy).toBe(true);
    const again = await request(app).post('/login?name=daniel').expect(201);
    const profile = await request(app).get('/user').set('Cookie', cookieHeader(shouldSetCookie(again)));
    expect(profile.body.data).toEqual({ name: 'daniel' });
    expect(unhandled).toEqual([]);
  });

  it('when Redis stalls without closing the connection, then requests get 503 within 5 s, not a hang', async () => {
    const config = testConfig({ SESSION_STORE: 'redis', REDIS_URL: redis.url });
    const stalled = await createSessionStore(config, silent);
    await stalled.ready();
    const app = createApp({ config, store: stalled.store });
    const header = cookieHeader(shouldSetCookie(await request(app).post('/login?name=daniel').expect(201)));

    redis.pause();
    try {
      const started = Date.now();
      const res = await request(app).get('/user').set('Cookie', header);

      expect(Date.now() - started).toBeLessThan(5000);
      expect(res.status).toBe(503);
      expect(res.body.error).toMatch(/session store unavailable/i);
    } finally {
      redis.resume();
    }
    const after = await request(app).get('/user').set('Cookie', header);
    expect(after.body.data).toEqual({ name: 'daniel' });
    await stalled.close();
  });
});

describeWith('redis-server', 'the server process on Redis', () => {
  it('when it gets SIGTERM, then it closes its Redis client and exits 0 within 10 s', async () => {
    const redis = await RedisServer.start();
    const run = startServer({ SESSION_STORE: 'redis', REDIS_URL: redis.url, APPLICATION_PORT: String(await freePort()) });
    try {
      const port = await listening(run);
      expect((await request(`http://127.0.0.1:${port}`).post('/login?name=daniel')).status).toBe(201);

      const signalled = Date.now();
      run.child.kill('SIGTERM');

      expect((await run.exited).code).toBe(0);
      expect(Date.now() - signalled).toBeLessThan(10_000);
    } finally {
      if (run.child.exitCode === null) run.child.kill('SIGKILL');
      await redis.stop();
    }
  });
});

function shouldNotSetCookieOn(res: { headers: Record<string, unknown> }): void {
  expect(res.headers['set-cookie']).toBeUndefined();
}
