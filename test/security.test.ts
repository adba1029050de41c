import request from 'supertest';
import { createApp } from '../src/app';
import { createMemoryStore } from '../src/stores';
import type { SessionData } from 'express-session';
import { cookieHeader, makeApp, sessionId, setCookies, shouldNotSetCookie, shouldSetCookie, signedCookieHeader, sleep, storedCount, storedSession, testConfig } from './helpers';

const STRONG = 'production-secret-of-at-least-32-characters';
const PRODUCTION = { NODE_ENV: 'production', SESSION_SECRET: STRONG };

describe('session fixation (OWASP: renew the session ID after login)', () => {
  it('when a client logs in with a planted session cookie, then it gets a new ID and the planted one is dead', async () => {
    const { app } = makeApp();
    // the attacker's own valid session, planted in the victim's browser
    const planted = shouldSetCookie(await request(app).post('/login?name=attacker').expect(201));

    const login = await request(app).post('/login?name=victim').set('Cookie', cookieHeader(planted)).expect(201);

    const fresh = shouldSetCookie(login);
    expect(sessionId(fresh)).not.toBe(sessionId(planted));
    const replay = await request(app).get('/user').set('Cookie', cookieHeader(planted));
    expect(replay.body).toEqual({ info: 'No data present in session' });
    const victim = await request(app).get('/user').set('Cookie', cookieHeader(fresh));
    expect(victim.body.data).toEqual({ name: 'victim' });
  });

  it('when a client logs in with a planted session holding pre-login state (no user yet), then it still gets a new ID', async () => {
    const { app, config, store } = makeApp();
    // what an app that keeps a return URL before login would have stored for the attacker's own visit
    store.set('planted-pre-login-id', { cookie: { expires: new Date(Date.now() + 60_000), originalMaxAge: 60_000 }, returnTo: '/account' } as unknown as SessionData);
    const planted = signedCookieHeader('planted-pre-login-id', config.secrets[0]!);
    expect((await request(app).get('/user').set('Cookie', planted)).body).toEqual({ info: 'No data present in session' });

    const login = await request(app).post('/login?name=victim').set('Cookie', planted).expect(201);

    expect(sessionId(shouldSetCookie(login))).not.toBe('planted-pre-login-id');
    expect(storedSession(store, 'planted-pre-login-id')).toBeNull();
    const replay = await request(app).get('/user').set('Cookie', planted);
    expect(replay.body).toEqual({ info: 'No data present in session' });
  });

  it('when IDs are issued, then each carries at least 128 bits of randomness and none repeats', async () => {
    const { app } = makeApp();

    const ids = await Promise.all(
      Array.from({ length: 50 }, async () => sessionId(shouldSetCookie(await request(app).post('/login?name=a')))),
    );

    for (const id of ids) {
      // base64url: 6 bits a character; express-session draws 24 random bytes (192 bits)
      expect(id).toMatch(/^[A-Za-z0-9_-]+$/);
      expect(id.length * 6).toBeGreaterThanOrEqual(128);
    }
    expect(new Set(ids).size).toBe(ids.length);
  });
});

describe('session cookie attributes', () => {
  it('when in development, then HttpOnly, SameSite=Lax, Path=/, Expires = idle timeout, not Secure, never connect.sid', async () => {
    const { app } = makeApp({ SESSION_IDLE_TIMEOUT_SECONDS: '600' });

    const res = await request(app).post('/login?name=daniel').expect(201);

    const cookie = shouldSetCookie(res, 'sid');
    expect(cookie.attributes.httponly).toBe(true);
    expect(cookie.attributes.samesite).toBe('Lax');
    expect(cookie.attributes.path).toBe('/');
    expect(cookie.attributes.secure).toBeUndefined();
    expect(cookie.attributes.domain).toBeUndefined();
    const expires = new Date(cookie.attributes.expires as string).getTime();
    expect(Math.abs(expires - (Date.now() + 600_000))).toBeLessThan(3000);
    expect(setCookies(res).map((c) => c.name)).not.toContain('connect.sid');
  });

  it('when in production behind a TLS-terminating proxy (TRUST_PROXY, X-Forwarded-Proto: https), then the cookie is Secure', async () => {
    const { app } = makeApp({ ...PRODUCTION, TRUST_PROXY: '1' });

    const res = await request(app).post('/login?name=daniel').set('X-Forwarded-Proto', 'https').expect(201);

    // __Host-: the browser keeps it only when Secure, with Path=/ and no Domain, so no sibling subdomain can set it
    const cookie = shouldSetCookie(res, '__Host-sid');
    expect(cookie.attributes.secure).toBe(true);
    expect(cookie.attributes.path).toBe('/');
    expect(cookie.attributes.domain).toBeUndefined();
    expect(cookie.attributes.httponly).toBe(true);
    expect(cookie.attributes.samesite).toBe('Lax');
    expect(setCookies(res).map((c) => c.name)).toEqual(['__Host-sid']);
  });

  it('when in production with COOKIE_SECURE=auto, then the cookie keeps the plain name sid', async () => {
    const { app } = makeApp({ ...PRODUCTION, COOKIE_SECURE: 'auto', TRUST_PROXY: '1' });

    const res = await request(app).post('/login?name=daniel').set('X-Forwarded-Proto', 'https').expect(201);

    expect(shouldSetCookie(res, 'sid').attributes.secure).toBe(true);
  });

  it('when in production over plain HTTP, then no Secure cookie is sent where it could be read on the wire', async () => {
    const { app } = makeApp({ ...PRODUCTION, TRUST_PROXY: '1' });

    const res = await request(app).post('/login?name=daniel').expect(201);

    shouldNotSetCookie(res);
  });

  it('when in production without TRUST_PROXY, then a forged X-Forwarded-Proto is not believed', async () => {
    const { app } = makeApp(PRODUCTION);

    const res = await request(app).post('/login?name=daniel').set('X-Forwarded-Proto', 'https').expect(201);

    shouldNotSetCookie(res);
  });

  it('when COOKIE_SECURE=auto, then Secure follows the scheme the proxy reports', async () => {
    const { app } = makeApp({ COOKIE_SECURE: 'auto', TRUST_PROXY: 'loopback' });

    const https = await request(app).post('/login?name=a').set('X-Forwarded-Proto', 'https').expect(201);
    const http = await request(app).post('/login?name=b').expect(201);

    expect(shouldSetCookie(https).attributes.secure).toBe(true);
    expect(shouldSetCookie(http).attributes.secure).toBeUndefined();
  });

  it('when logging out in production behind the proxy, then the clearing cookie is Secure too (or the browser keeps the old)', async () => {
    const { app } = makeApp({ ...PRODUCTION, TRUST_PROXY: '1' });
    const login = await request(app).post('/login?name=daniel').set('X-Forwarded-Proto', 'https').expect(201);

    const res = await request(app)
      .post('/logout')
      .set('X-Forwarded-Proto', 'https')
      .set('Cookie', cookieHeader(shouldSetCookie(login, '__Host-sid')))
      .expect(204);

    const cleared = shouldSetCookie(res, '__Host-sid');
    expect(cleared.value).toBe('');
    expect(cleared.attributes.secure).toBe(true);
    expect(cleared.attributes.httponly).toBe(true);
    expect(cleared.attributes.samesite).toBe('Lax');
    expect(cleared.attributes.path).toBe('/');
    expect(cleared.attributes.domain).toBeUndefined();
  });
});

describe('timeouts enforced on the server (OWASP: idle and absolute timeouts)', () => {
  it('when a session sits unused past the idle timeout, then it reads as no session and leaves the store', async () => {
    const { app, store } = makeApp({ SESSION_IDLE_TIMEOUT_SECONDS: '1' });
    const cookie = shouldSetCookie(await request(app).post('/login?name=daniel').expect(201));

    await sleep(1300);
    // the browser would have dropped it; a replaying client still sends it
    const res = await request(app).get('/user').set('Cookie', cookieHeader(cookie));

    expect(res.body).toEqual({ info: 'No data present in session' });
    shouldNotSetCookie(res);
    expect(storedCount(store)).toBe(0);
  });

  it('when the session is used within the idle timeout, then its expiry moves forward, cookie included', async () => {
    const { app } = makeApp({ SESSION_IDLE_TIMEOUT_SECONDS: '2' });
    const login = await request(app).post('/login?name=daniel').expect(201);
    const cookie = shouldSetCookie(login);

    await sleep(1200);
    const renewed = await request(app).get('/user').set('Cookie', cookieHeader(cookie));
    await sleep(1200);
    // 2.4 s after login, past the first expiry, but 1.2 s after the last use
    const still = await request(app).get('/user').set('Cookie', cookieHeader(cookie));

    expect(renewed.body.data).toEqual({ name: 'daniel' });
    expect(still.body.data).toEqual({ name: 'daniel' });
    const first = new Date(cookie.attributes.expires as string).getTime();
    const later = new Date(shouldSetCookie(renewed).attributes.expires as string).getTime();
    expect(later).toBeGreaterThan(first);
  });

  it('when the cookie was sent less than a tenth of the idle timeout ago, then it is not sent again; after that, it is', async () => {
    // a renewal interval of 1 s: long enough that the first read comes before it even on a busy machine
    const { app, store } = makeApp({ SESSION_IDLE_TIMEOUT_SECONDS: '10' });
    const login = await request(app).post('/login?name=daniel').expect(201);
    const cookie = cookieHeader(shouldSetCookie(login));

    const soon = await request(app).get('/user').set('Cookie', cookie);
    await sleep(1100);
    const later = await request(app).get('/user').set('Cookie', cookie);

    expect(soon.body.data).toEqual({ name: 'daniel' });
    shouldNotSetCookie(soon);
    const renewed = shouldSetCookie(later);
    expect(cookieHeader(renewed)).toBe(cookie);
    expect(new Date(renewed.attributes.expires as string).getTime()).toBeGreaterThan(
      new Date(shouldSetCookie(login).attributes.expires as string).getTime(),
    );
    expect(storedCount(store)).toBe(1);
  });

  it('when an active session outlives the absolute timeout, then it ends however active it was', async () => {
    const { app, store } = makeApp({ SESSION_IDLE_TIMEOUT_SECONDS: '2', SESSION_ABSOLUTE_TIMEOUT_SECONDS: '3' });
    const cookie = cookieHeader(shouldSetCookie(await request(app).post('/login?name=daniel').expect(201)));
    const seen: string[] = [];

    for (let i = 0; i < 5; i += 1) {
      await sleep(700);
      seen.push((await request(app).get('/user').set('Cookie', cookie)).body.info);
    }

    // 3.5 s after login, never idle for more than 0.7 s
    expect(seen.slice(0, 3)).toEqual(['User profile info', 'User profile info', 'User profile info']);
    expect(seen[4]).toBe('No data present in session');
    expect(storedCount(store)).toBe(0);
  });
});

describe('secret rotation', () => {
  it('when a cookie was signed by a secret now listed second, then it is still accepted and re-signed by the first', async () => {
    // a short idle timeout, so the cookie is due for renewal (and re-signing) at the next request
    const env = { SESSION_IDLE_TIMEOUT_SECONDS: '2' };
    const config = testConfig({ ...env, SESSION_SECRET: 'old-secret' });
    const store = createMemoryStore(config);
    const before = createApp({ config, store });
    const after = createApp({ config: testConfig({ ...env, SESSION_SECRET: 'new-secret,old-secret' }), store });
    const onlyNew = createApp({ config: testConfig({ ...env, SESSION_SECRET: 'new-secret' }), store });
    const oldCookie = shouldSetCookie(await request(before).post('/login?name=daniel').expect(201));
    await sleep(300);

    const res = await request(after).get('/user').set('Cookie', cookieHeader(oldCookie));

    expect(res.body.data).toEqual({ name: 'daniel' });
    const resigned = shouldSetCookie(res);
    expect(sessionId(resigned)).toBe(sessionId(oldCookie));
    expect(resigned.value).not.toBe(oldCookie.value);
    const later = await request(onlyNew).get('/user').set('Cookie', cookieHeader(resigned));
    expect(later.body.data).toEqual({ name: 'daniel' });
    store.close();
  });

  it('when a cookie was signed by a secret not in the list, then it is refused', async () => {
    const config = testConfig({ SESSION_SECRET: 'retired-secret' });
    const store = createMemoryStore(config);
    const retired = createApp({ config, store });
    const current = createApp({ config: testConfig({ SESSION_SECRET: 'new-secret,old-secret' }), store });
    const cookie = shouldSetCookie(await request(retired).post('/login?name=daniel').expect(201));

    const res = await request(current).get('/user').set('Cookie', cookieHeader(cookie));

    expect(res.body).toEqual({ info: 'No data present in session' });
    store.close();
  });
});

describe('login throttling (OWASP: protect against automated attacks)', () => {
  it('when one client exceeds LOGIN_RATE_LIMIT_PER_MINUTE, then 429 JSON with Retry-After, and nothing is stored', async () => {
    const { app, store } = makeApp({ LOGIN_RATE_LIMIT_PER_MINUTE: '3' });
    for (let i = 0; i < 3; i += 1) await request(app).post('/login?name=a').expect(201);

    const res = await request(app).post('/login?name=a');

    expect(res.status).toBe(429);
    expect(res.body).toEqual({ error: expect.stringMatching(/too many login attempts/i) });
    const retryAfter = Number(res.headers['retry-after']);
    expect(retryAfter).toBeGreaterThan(0);
    expect(retryAfter).toBeLessThanOrEqual(60);
    shouldNotSetCookie(res);
    expect(storedCount(store)).toBe(3);
  });

  it('when logins are throttled, then other endpoints and other clients are not', async () => {
    const { app } = makeApp({ LOGIN_RATE_LIMIT_PER_MINUTE: '1', TRUST_PROXY: 'loopback' });
    await request(app).post('/login?name=a').set('X-Forwarded-For', '203.0.113.1').expect(201);
    await request(app).post('/login?name=a').set('X-Forwarded-For', '203.0.113.1').expect(429);

    await request(app).get('/user').set('X-Forwarded-For', '203.0.113.1').expect(200);
    await request(app).post('/logout').set('X-Forwarded-For', '203.0.113.1').expect(204);
    await request(app).post('/login?name=b').set('X-Forwarded-For', '203.0.113.2').expect(201);
  });

  it('when LOGIN_RATE_LIMIT_PER_MINUTE=0, then logins are not limited', async () => {
    const { app } = makeApp({ LOGIN_RATE_LIMIT_PER_MINUTE: '0' });

    for (let i = 0; i < 30; i += 1) await request(app).post('/login?name=a').expect(201);
  });
});

describe('headers', () => {
  it.each(['/user', '/healthz', '/nope'])('when %s is requested, then helmet headers are there and X-Powered-By is not', async (path) => {
    const res = await request(makeApp().app).get(path);

    expect(res.headers['x-powered-by']).toBeUndefined();
    expect(res.headers['x-content-type-options']).toBe('nosniff');
    expect(res.headers['content-security-policy']).toContain("default-src 'self'");
    expect(res.headers['x-frame-options']).toBe('SAMEORIGIN');
    expect(res.headers['strict-transport-security']).toMatch(/max-age=/);
    expect(res.headers['referrer-policy']).toBe('no-referrer');
  });

  it.each([
    ['post', '/login?name=a'],
    ['get', '/user'],
    ['post', '/logout'],
  ] as const)('when %s %s reads or writes a session, then Cache-Control: no-store', async (method, path) => {
    const res = await request(makeApp().app)[method](path);

    expect(res.headers['cache-control']).toBe('no-store');
  });
});
