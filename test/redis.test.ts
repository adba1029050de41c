import type { SessionData } from 'express-session';
import pino from 'pino';
import { createClient } from 'redis';
import request from 'supertest';
import { DEVELOPMENT_SECRET, type Env } from '../src/config';
import { createApp } from '../src/app';
import { createSessionStore } from '../src/stores';
import type { SessionStore } from '../src/stores/types';
import { userKeys } from '../src/stores/redis-index';
import { userTag } from '../src/session';
import {
  capturedLogger,
  cookieHeader,
  describeWith,
  destroySession,
  loadSession,
  saveSession,
  signedCookieHeader,
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

interface OwnRedis {
  redis: RedisServer;
  /** a client of the test's own, to look into Redis or to break it */
  client: ReturnType<typeof createClient>;
  /** one app instance, with a Redis client of its own, as a separate process would have */
  instance(env?: Env): Promise<{ app: ReturnType<typeof createApp>; sessions: SessionStore }>;
}

/** a redis-server for the enclosing block alone; it, its client and every instance made on it are stopped after the block */
function ownRedis(): OwnRedis {
  const opened: SessionStore[] = [];
  const own = {
    async instance(env: Env = {}) {
      const config = testConfig({ SESSION_STORE: 'redis', REDIS_URL: own.redis.url, ...env });
      const sessions = await createSessionStore(config, silent);
      await sessions.ready();
      opened.push(sessions);
      return { app: createApp({ config, store: sessions.store, rateLimitStore: sessions.rateLimitStore?.() }), sessions };
    },
  } as OwnRedis;

  beforeAll(async () => {
    own.redis = await RedisServer.start();
    own.client = createClient({ url: own.redis.url });
    own.client.on('error', () => {});
    await own.client.connect();
  });

  afterAll(async () => {
    await Promise.all(opened.map((sessions) => sessions.close().catch(() => {})));
    own.client?.destroy();
    await own.redis?.stop();
  });

  return own;
}

describeWith('redis-server', 'sessions in a real Redis', () => {
  const own = ownRedis();
  const { instance } = own;

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

    const ttl = await own.client.ttl(key);

    expect(ttl).toBeGreaterThan(115);
    expect(ttl).toBeLessThanOrEqual(120);
  });

  /** how many times Redis has run `command` since it started */
  async function calls(command: string): Promise<number> {
    const stats = await own.client.info('commandstats');
    return Number(new RegExp(`^cmdstat_${command}:calls=(\\d+)`, 'm').exec(stats)?.[1] ?? 0);
  }

  it('when the session is used within the renewal interval, then the read is one MGET (the session and both revocation stamps) and no write: the TTL runs on', async () => {
    // renewal interval: a tenth of the idle timeout, 2 s
    const { app } = await instance({ SESSION_IDLE_TIMEOUT_SECONDS: '20' });
    const { header, key } = await login(app);
    await sleep(1000);
    const writes = ['expire', 'set', 'evalsha', 'eval', 'get'];
    const before = await Promise.all([calls('mget'), ...writes.map(calls)]);

    await request(app).get('/user').set('Cookie', header).expect(200);

    expect(await Promise.all([calls('mget'), ...writes.map(calls)])).toEqual([(before[0] ?? 0) + 1, ...before.slice(1)]);
    expect(await own.client.pTTL(key)).toBeLessThan(19_100);
  });

  it('when the session is used after the renewal interval, then it is renewed: the TTL is the full idle timeout again', async () => {
    const { app } = await instance({ SESSION_IDLE_TIMEOUT_SECONDS: '20' });
    const { header, key } = await login(app);
    await sleep(2100);
    const before = await own.client.pTTL(key);

    const res = await request(app).get('/user').set('Cookie', header).expect(200);

    expect(before).toBeLessThan(18_000);
    expect(await own.client.pTTL(key)).toBeGreaterThan(19_000);
    shouldSetCookie(res);
  });

  it('when the absolute timeout is nearer than the idle one, then the TTL follows the absolute timeout', async () => {
    const { app } = await instance({ SESSION_IDLE_TIMEOUT_SECONDS: '600', SESSION_ABSOLUTE_TIMEOUT_SECONDS: '30' });
    const { key } = await login(app);

    const ttl = await own.client.ttl(key);

    // -1 would be a key with no expiry at all
    expect(ttl).toBeGreaterThan(25);
    expect(ttl).toBeLessThanOrEqual(30);
  });

  it('when idle past the timeout, then Redis has dropped the session and the app reads no data', async () => {
    const { app } = await instance({ SESSION_IDLE_TIMEOUT_SECONDS: '1' });
    const { header, key } = await login(app);

    await sleep(2100);

    expect(await own.client.exists(key)).toBe(0);
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
    const id = /s%3A([^.]+)\./.exec(cookie)?.[1];
    expect(id).toBeDefined();
    expect(await own.client.exists(`sess:${id}`)).toBe(0);
  });

  it.each([
    ['renews it', (sess: SessionData) => (sess.cookieRenewedAt = Date.now() + 1000)],
    ['changes another field (pre-login state, say)', (sess: SessionData) => Object.assign(sess, { returnTo: '/account' })],
  ])('when a request that loaded a session %s and saves it after the session was destroyed, then it is not recreated', async (_what, change) => {
    const { sessions } = await instance();
    const loginAt = Date.now();
    const sess = { cookie: { expires: new Date(loginAt + 60_000), originalMaxAge: 60_000 }, user: { name: 'x' }, loginAt, cookieRenewedAt: loginAt } as SessionData;
    await saveSession(sessions.store, 'loaded', sess);
    const loaded = await loadSession(sessions.store, 'loaded');

    await destroySession(sessions.store, 'loaded');
    change(loaded);
    await saveSession(sessions.store, 'loaded', loaded);

    expect(await own.client.exists('sess:loaded')).toBe(0);
  });

  it('when a request that loaded a session saves a change while it exists, then Redis holds the change, with its TTL', async () => {
    const { sessions } = await instance();
    const loginAt = Date.now();
    await saveSession(sessions.store, 'kept', { cookie: { expires: new Date(loginAt + 60_000), originalMaxAge: 60_000 }, user: { name: 'x' }, loginAt, cookieRenewedAt: loginAt } as SessionData);
    const loaded = await loadSession(sessions.store, 'kept');

    loaded.user = { name: 'y' };
    await saveSession(sessions.store, 'kept', loaded);

    expect(JSON.parse((await own.client.get('sess:kept')) ?? '{}').user).toEqual({ name: 'y' });
    expect(await own.client.ttl('sess:kept')).toBeGreaterThan(55);
  });

  it('when Redis still holds a session for a moment past its end (TTLs are whole seconds), then it is not served, and no new session or cookie takes its place', async () => {
    const { app, sessions } = await instance();
    const now = Date.now();
    // ends 1.2 s from now; Redis keeps the key for 2 s
    await saveSession(sessions.store, 'ending', { cookie: { expires: new Date(now + 1200), originalMaxAge: 1200 }, user: { name: 'x' }, loginAt: now, cookieRenewedAt: now } as SessionData);
    await sleep(1500);
    expect(await own.client.exists('sess:ending')).toBe(1);
    const before = (await own.client.keys('sess:*')).sort();

    const res = await request(app).get('/user').set('Cookie', signedCookieHeader('ending', DEVELOPMENT_SECRET));

    expect(res.body).toEqual({ info: 'No data present in session' });
    expect(res.headers['set-cookie']).toBeUndefined();
    expect((await own.client.keys('sess:*')).sort()).toEqual(before);
  });

  it('when a login counter has lost its expiry, then the next login gives it a window again', async () => {
    const stale = await own.client.keys('rl:login:*');
    if (stale.length > 0) await own.client.del(stale);
    const { app } = await instance({ LOGIN_RATE_LIMIT_PER_MINUTE: '100' });
    await request(app).post('/login?name=a').expect(201);
    const [key] = await own.client.keys('rl:login:*');
    await own.client.persist(key!);

    await request(app).post('/login?name=b').expect(201);

    expect(await own.client.pTTL(key!)).toBeGreaterThan(55_000);
  });

  it('when instances share Redis, then the login limit is one budget per client across all of them', async () => {
    const stale = await own.client.keys('rl:login:*');
    if (stale.length > 0) await own.client.del(stale);
    const a = await instance({ LOGIN_RATE_LIMIT_PER_MINUTE: '2' });
    const b = await instance({ LOGIN_RATE_LIMIT_PER_MINUTE: '2' });

    const statuses = [];
    for (const app of [a.app, b.app, a.app, b.app]) statuses.push((await request(app).post('/login?name=daniel')).status);

    expect(statuses).toEqual([201, 201, 429, 429]);
    expect(await own.client.keys('rl:login:*')).toHaveLength(1);
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

  it('when a login is answered 503 while Redis stalls, then its write, run once Redis wakes, is undone: no session, no index entry, no audit line', async () => {
    const config = testConfig({ SESSION_STORE: 'redis', REDIS_URL: redis.url, ADMIN_TOKEN: 'an-admin-token-of-at-least-32-characters' });
    const { logger, lines } = capturedLogger('info');
    const stalled = await createSessionStore(config, logger);
    await stalled.ready();
    const app = createApp({ config, store: stalled.store, logger });
    const client = createClient({ url: redis.url });
    await client.connect();

    redis.pause();
    let refused: request.Response;
    try {
      refused = await request(app).post('/login?name=late');
    } finally {
      redis.resume();
    }
    // the stalled commands run now: the session's SET, then (with the fix) its DEL
    await sleep(300);

    expect(refused.status).toBe(503);
    expect(await client.keys(`sess:${userTag('late')}*`)).toEqual([]);
    expect(await client.hLen(userKeys('late')[2])).toBe(0);
    expect(lines.filter((line) => line.event === 'session_created')).toEqual([]);
    client.destroy();
    await stalled.close();
  });
});

describeWith('redis-server', 'Redis refusing commands, and coming back', () => {
  const own = ownRedis();

  afterEach(async () => {
    // whatever a test broke, the next one starts with a Redis that serves everything
    await own.client.sendCommand(['ACL', 'SETUSER', 'default', 'on', 'nopass', '+@all', '~*', '&*']);
    await own.client.configSet({ maxmemory: '0', 'min-replicas-to-write': '0' });
    await own.client.sendCommand(['REPLICAOF', 'NO', 'ONE']);
  });

  async function instance(env: Env = {}) {
    return (await own.instance({ LOGIN_RATE_LIMIT_PER_MINUTE: '1000', ...env })).app;
  }

  function shouldBeStoreUnavailable(res: request.Response): void {
    expect(res.status).toBe(503);
    expect(res.body).toEqual({ error: 'Session store unavailable, try again shortly' });
    expect(res.headers['retry-after']).toBe('5');
    expect(res.headers['set-cookie']).toBeUndefined();
  }

  it('when the script cache is flushed and reloading scripts fails, then logins go on, and keep going once Redis is whole', async () => {
    const app = await instance();
    await request(app).post('/login?name=a').expect(201);

    // what a restart or a failover does to the script cache, and a reload that then fails
    await own.client.sendCommand(['SCRIPT', 'FLUSH']);
    await own.client.sendCommand(['ACL', 'SETUSER', 'default', '-script|load']);
    const during = await request(app).post('/login?name=b');
    await own.client.sendCommand(['ACL', 'SETUSER', 'default', '+script|load']);
    const after = await request(app).post('/login?name=c');

    expect(during.status).not.toBe(500);
    expect(after.status).toBe(201);
  });

  it('when logins cannot be counted, then they are 503 and /healthz is 503; when they can again, both recover by themselves', async () => {
    const app = await instance();
    await request(app).post('/login?name=a').expect(201);

    await own.client.sendCommand(['ACL', 'SETUSER', 'default', '-incr']);
    const refused = await request(app).post('/login?name=b');
    const unhealthy = await request(app).get('/healthz');
    await own.client.sendCommand(['ACL', 'SETUSER', 'default', '+incr']);
    const again = await request(app).post('/login?name=c');
    const healthy = await request(app).get('/healthz');

    shouldBeStoreUnavailable(refused);
    expect(unhealthy.status).toBe(503);
    expect(again.status).toBe(201);
    expect(healthy.status).toBe(200);
  });

  it.each([
    ['out of memory (OOM)', () => own.client.configSet('maxmemory', '1')],
    ['a replica (READONLY)', async () => own.client.sendCommand(['REPLICAOF', '127.0.0.1', String(await freePort())])],
    // min-replicas-to-write with no replica: the primary refuses writes it could lose in a failover
    ['a primary short of replicas (NOREPLICAS)', () => own.client.configSet('min-replicas-to-write', '1')],
  ])('when Redis answers writes with an error reply, %s, then a login is the store-unavailable 503, never a 500, and recovers', async (_what, refuseWrites) => {
    // the limit off: the session's own write is the one that meets the error
    const app = await instance({ LOGIN_RATE_LIMIT_PER_MINUTE: '0' });
    const header = cookieHeader(shouldSetCookie(await request(app).post('/login?name=a').expect(201)));

    await refuseWrites();
    const refused = await request(app).post('/login?name=b');
    const reading = await request(app).get('/user').set('Cookie', header);
    // the index's changes are writes too: ending sessions meets the same error
    const endOthers = await request(app).delete('/sessions').set('Cookie', header);
    await own.client.configSet({ maxmemory: '0', 'min-replicas-to-write': '0' });
    await own.client.sendCommand(['REPLICAOF', 'NO', 'ONE']);
    const again = await request(app).post('/login?name=c');

    shouldBeStoreUnavailable(refused);
    shouldBeStoreUnavailable(endOthers);
    // reads are still served
    expect(reading.body.data).toEqual({ name: 'a' });
    expect(again.status).toBe(201);
    expect((await request(app).delete('/sessions').set('Cookie', header)).status).toBe(200);
  });

  it('when the login counter meets an error reply (OOM), then the login is the store-unavailable 503', async () => {
    const app = await instance();

    await own.client.configSet('maxmemory', '1');
    const refused = await request(app).post('/login?name=b');

    shouldBeStoreUnavailable(refused);
  });
});

/** the same idle-timeout scenario on either store: both count the idle timeout from the last renewal */
function idleTimeoutScenario(kind: 'memory' | 'redis'): () => void {
  return () => {
    let redis: RedisServer | undefined;
    let sessions: SessionStore;
    let app: ReturnType<typeof createApp>;

    beforeAll(async () => {
      if (kind === 'redis') redis = await RedisServer.start();
      // a 10 s idle timeout: the session is renewed once 1 s has passed since its last renewal
      const config = testConfig({ SESSION_STORE: kind, REDIS_URL: redis?.url, SESSION_IDLE_TIMEOUT_SECONDS: '10' });
      sessions = await createSessionStore(config, silent);
      await sessions.ready();
      app = createApp({ config, store: sessions.store });
    });

    afterAll(async () => {
      await sessions?.close();
      await redis?.stop();
    });

    it('when a session is used before its first renewal and then left idle, then it ends one idle timeout after the renewal, not after the use', async () => {
      const early = cookieHeader(shouldSetCookie(await request(app).post('/login?name=early').expect(201)));
      const renewed = cookieHeader(shouldSetCookie(await request(app).post('/login?name=renewed').expect(201)));

      await sleep(600);
      // within the renewal interval: nothing is written
      await request(app).get('/user').set('Cookie', early).expect(200);
      await sleep(900);
      // past it: the session is renewed, and its idle timeout starts again
      await request(app).get('/user').set('Cookie', renewed).expect(200);
      await sleep(8800);

      // 10.3 s after login: the early session ended at 10 s, though used 9.7 s ago; the other was renewed 8.8 s ago
      expect((await request(app).get('/user').set('Cookie', early)).body).toEqual({ info: 'No data present in session' });
      expect((await request(app).get('/user').set('Cookie', renewed)).body.data).toEqual({ name: 'renewed' });
    }, 20_000);
  };
}

describe('the idle timeout on the memory store', idleTimeoutScenario('memory'));
describeWith('redis-server', 'the idle timeout on the Redis store', idleTimeoutScenario('redis'));

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

describeWith('redis-server', 'the server process on a stalled Redis', () => {
  it('when it gets SIGTERM while Redis is stalled and a command is outstanding, then it still exits 0 within 10 s', async () => {
    const redis = await RedisServer.start();
    const run = startServer({ SESSION_STORE: 'redis', REDIS_URL: redis.url, APPLICATION_PORT: String(await freePort()) });
    try {
      const url = `http://127.0.0.1:${await listening(run)}`;
      const header = cookieHeader(shouldSetCookie(await request(url).post('/login?name=daniel').expect(201)));

      redis.pause();
      // its GET will never be answered: the request gets its 503 at the deadline, the command stays queued
      const inFlight = request(url).get('/user').set('Cookie', header).then((res) => res.status, () => 'cut');
      await sleep(200);
      const signalled = Date.now();
      run.child.kill('SIGTERM');
      const exited = await Promise.race([run.exited, sleep(12_000).then(() => ({ code: 'still running after 12 s' }))]);

      expect(exited.code).toBe(0);
      expect(Date.now() - signalled).toBeLessThan(10_000);
      expect(await inFlight).toBe(503);
    } finally {
      if (run.child.exitCode === null) run.child.kill('SIGKILL');
      redis.resume();
      await redis.stop();
    }
  });
});

function shouldNotSetCookieOn(res: { headers: Record<string, unknown> }): void {
  expect(res.headers['set-cookie']).toBeUndefined();
}
