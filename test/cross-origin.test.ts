import request, { type Test } from 'supertest';
import { createApp } from '../src/app';
import { createMemoryStore } from '../src/stores';
import { capturedLogger, cookieHeader, makeApp, sessionId, shouldNotSetCookie, shouldSetCookie, storedCount, storedSession, testConfig } from './helpers';

const REFUSED = { error: 'Cross-origin request refused' };

// every kind of unsafe request the app answers: the three routes, a 405 and a 404
const UNSAFE_ROUTES: [string, string][] = [
  ['POST', '/login?name=attacker'],
  ['POST', '/logout'],
  ['POST', '/user'],
  ['DELETE', '/user'],
  ['PUT', '/login'],
  ['PATCH', '/healthz'],
  ['POST', '/nowhere'],
  ['DELETE', '/'],
  ['DELETE', '/sessions'],
  ['DELETE', '/sessions/x'],
  ['DELETE', '/admin/sessions'],
];

// headers a page of another origin makes a browser send
const CROSS_ORIGIN: [string, Record<string, string>][] = [
  ['Sec-Fetch-Site: cross-site', { 'Sec-Fetch-Site': 'cross-site', Origin: 'http://evil.example' }],
  ['Sec-Fetch-Site: same-site (a sibling subdomain or port)', { 'Sec-Fetch-Site': 'same-site', Origin: 'http://app.test:3000' }],
  ['an unknown Sec-Fetch-Site value', { 'Sec-Fetch-Site': 'same-origin, cross-site' }],
  ['Sec-Fetch-Site: cross-site even with an Origin naming the host', { 'Sec-Fetch-Site': 'cross-site', Origin: 'HOST' }],
  ['an Origin of another host (an older browser)', { Origin: 'http://evil.example' }],
  ['an Origin of the same host on another port', { Origin: 'http://app.test:3000' }],
  ['Origin: null (a sandboxed frame, a redirect)', { Origin: 'null' }],
  ['an Origin that is not one origin', { Origin: 'http://evil.example, HOST' }],
];

// the Host every request names, so that a test can send an Origin that matches it
const HOST = 'app.test:7501';

/** sends `method path` with `headers`, where "HOST" in a value stands for the app's own origin */
function send(app: Parameters<typeof request>[0], method: string, path: string, headers: Record<string, string>, cookie?: string): Test {
  const req = request(app)[method.toLowerCase() as 'post'](path).set('Host', HOST);
  for (const [name, value] of Object.entries(headers)) req.set(name, value.replace('HOST', `http://${HOST}`));
  if (cookie) req.set('Cookie', cookie);
  return req;
}

describe('cross-origin requests are refused before any session work', () => {
  it.each([
    ['DELETE /sessions (end all others)', (_handle: string) => '/sessions'],
    ['DELETE /sessions/:id (end one)', (handle: string) => `/sessions/${handle}`],
  ])('when a page of another site sends %s with the victim\'s cookie, then 403 and both sessions live on; from the page itself it works', async (_what, path) => {
    const { app } = makeApp();
    const [mine, other] = [
      cookieHeader(shouldSetCookie(await request(app).post('/login?name=victim').expect(201))),
      cookieHeader(shouldSetCookie(await request(app).post('/login?name=victim').expect(201))),
    ];
    const listed = await request(app).get('/sessions').set('Cookie', mine).expect(200);
    const otherHandle = (listed.body as { sessions: { id: string; current: boolean }[] }).sessions.find((s) => !s.current)?.id ?? '';
    const method = 'DELETE';

    const forged = await send(app, method, path(otherHandle), { 'Sec-Fetch-Site': 'cross-site', Origin: 'http://evil.example' }, mine);
    const otherAfterForgery = await request(app).get('/user').set('Cookie', other);
    const own = await send(app, method, path(otherHandle), { 'Sec-Fetch-Site': 'same-origin', Origin: 'HOST' }, mine);

    expect(forged.status).toBe(403);
    expect(otherAfterForgery.body).toEqual({ info: 'User profile info', data: { name: 'victim' } });
    expect(own.status).toBeLessThan(300);
    expect((await request(app).get('/user').set('Cookie', other)).body).toEqual({ info: 'No data present in session' });
  });

  describe.each(CROSS_ORIGIN)('when the request carries %s', (_what, headers) => {
    it.each(UNSAFE_ROUTES)('then %s %s is 403, sets no cookie and changes nothing in the store', async (method, path) => {
      const { app, store } = makeApp();
      const victim = shouldSetCookie(await request(app).post('/login?name=victim').expect(201));
      const before = { count: storedCount(store), session: storedSession(store, sessionId(victim)) };

      const res = await send(app, method, path, headers, cookieHeader(victim));

      expect(res.status).toBe(403);
      expect(res.body).toEqual(REFUSED);
      expect(res.headers['cache-control']).toBe('no-store');
      shouldNotSetCookie(res);
      expect(storedCount(store)).toBe(before.count);
      expect(storedSession(store, sessionId(victim))).toEqual(before.session);
      const still = await request(app).get('/user').set('Cookie', cookieHeader(victim));
      expect(still.body).toEqual({ info: 'User profile info', data: { name: 'victim' } });
    });
  });

  it('when a refused request carries no cookie, then no session is created either', async () => {
    const { app, store } = makeApp();

    const res = await send(app, 'POST', '/login?name=attacker', { 'Sec-Fetch-Site': 'cross-site' });

    expect(res.status).toBe(403);
    shouldNotSetCookie(res);
    expect(storedCount(store)).toBe(0);
  });
});

describe('requests the rule lets through', () => {
  it.each<[string, Record<string, string>]>([
    ['neither Sec-Fetch-Site nor Origin (curl, Postman, server to server)', {}],
    ['Sec-Fetch-Site: same-origin', { 'Sec-Fetch-Site': 'same-origin', Origin: 'HOST' }],
    ['Sec-Fetch-Site: none (a typed URL, a bookmark)', { 'Sec-Fetch-Site': 'none' }],
    ['Sec-Fetch-Site: same-origin, whatever the Origin says', { 'Sec-Fetch-Site': 'same-origin', Origin: 'http://evil.example' }],
    ['only an Origin naming the request\'s own host and port', { Origin: 'HOST' }],
  ])('when the login carries %s, then it succeeds', async (_what, headers) => {
    const { app } = makeApp();

    const res = await send(app, 'POST', '/login?name=daniel', headers).expect(201);

    expect(res.body).toEqual({ info: 'User logged in' });
    shouldSetCookie(res);
  });

  it('when the Host names the default port and the Origin leaves it out, then they are the same origin', async () => {
    const { app } = makeApp();

    await request(app).post('/login?name=a').set('Host', 'app.example.com:443').set('Origin', 'https://app.example.com').expect(201);
    await request(app).post('/login?name=b').set('Host', 'APP.example.com').set('Origin', 'http://app.example.com').expect(201);
  });

  it('when the logout carries Sec-Fetch-Site: same-origin, then it logs out as always', async () => {
    const { app, store } = makeApp();
    const cookie = cookieHeader(shouldSetCookie(await request(app).post('/login?name=daniel').expect(201)));

    await send(app, 'POST', '/logout', { 'Sec-Fetch-Site': 'same-origin' }, cookie).expect(204);

    expect(storedCount(store)).toBe(0);
  });

  it('when a safe method comes from another site, then it is not the check\'s business (GET reads only)', async () => {
    const { app } = makeApp();
    const cookie = cookieHeader(shouldSetCookie(await request(app).post('/login?name=daniel').expect(201)));

    const res = await send(app, 'GET', '/user', { 'Sec-Fetch-Site': 'cross-site', Origin: 'http://evil.example' }, cookie).expect(200);

    expect(res.body.data).toEqual({ name: 'daniel' });
  });
});

describe('TRUSTED_ORIGINS', () => {
  const trusted = { TRUSTED_ORIGINS: 'https://sso.example.com, http://localhost:3000' };

  it('when a listed origin posts cross-site, then it is allowed whatever Sec-Fetch-Site says', async () => {
    const { app } = makeApp(trusted);

    await send(app, 'POST', '/login?name=a', { Origin: 'https://sso.example.com', 'Sec-Fetch-Site': 'cross-site' }).expect(201);
    await send(app, 'POST', '/login?name=b', { Origin: 'http://localhost:3000', 'Sec-Fetch-Site': 'same-site' }).expect(201);
    await send(app, 'POST', '/login?name=c', { Origin: 'https://sso.example.com' }).expect(201);
  });

  it.each([
    ['another scheme', 'http://sso.example.com'],
    ['another port', 'https://sso.example.com:8443'],
    ['a subdomain', 'https://evil.sso.example.com'],
    ['a suffix', 'https://sso.example.com.evil.example'],
  ])('when the Origin is a listed one with %s, then it is refused', async (_what, origin) => {
    const { app } = makeApp(trusted);

    const res = await send(app, 'POST', '/login?name=a', { Origin: origin, 'Sec-Fetch-Site': 'cross-site' });

    expect(res.status).toBe(403);
    shouldNotSetCookie(res);
  });
});

describe('behind a reverse proxy', () => {
  const forwarded = { 'X-Forwarded-Host': 'app.example.com', 'X-Forwarded-Proto': 'https' };

  it('when TRUST_PROXY is set, then an Origin is compared with the host the proxy forwards', async () => {
    const { app } = makeApp({ TRUST_PROXY: 'loopback' });

    const same = await send(app, 'POST', '/login?name=a', { ...forwarded, Origin: 'https://app.example.com' });
    const internal = await send(app, 'POST', '/login?name=b', { ...forwarded, Origin: 'HOST' });

    expect(same.status).toBe(201);
    // the internal address the proxy talks to is not the site the browser is on
    expect(internal.status).toBe(403);
  });

  it('when TRUST_PROXY is set and the proxy sends no forwarded host, then the Host header counts', async () => {
    const { app } = makeApp({ TRUST_PROXY: 'loopback' });

    await send(app, 'POST', '/login?name=a', { 'X-Forwarded-Proto': 'https', Origin: 'HOST' }).expect(201);
  });

  it('when TRUST_PROXY is not set, then a forged X-Forwarded-Host is not believed', async () => {
    const { app } = makeApp();

    const res = await send(app, 'POST', '/login?name=a', { ...forwarded, Origin: 'https://app.example.com' });

    expect(res.status).toBe(403);
    shouldNotSetCookie(res);
  });
});

describe('the log of a refused request', () => {
  it('when a request is refused, then its one log line is a warn naming the method, path and both headers, and no cookie', async () => {
    const { logger, lines } = capturedLogger('info');
    const config = testConfig({ LOG_LEVEL: 'info' });
    const app = createApp({ config, store: createMemoryStore(config), logger });

    await send(app, 'POST', '/logout', { 'Sec-Fetch-Site': 'cross-site', Origin: 'http://evil.example' }, 'sid=s%3Asecret-value.sig').expect(403);

    expect(lines).toEqual([
      expect.objectContaining({
        level: 40,
        req: { method: 'POST', path: '/logout' },
        res: { status: 403 },
        err: { type: 'CrossOriginError', message: 'Cross-origin request refused', secFetchSite: 'cross-site', origin: 'http://evil.example' },
      }),
    ]);
    expect(JSON.stringify(lines)).not.toContain('secret-value');
  });

  it('when the refused request sends kilobytes of Origin, then the log keeps 200 characters of it', async () => {
    const { logger, lines } = capturedLogger('info');
    const config = testConfig({ LOG_LEVEL: 'info' });
    const app = createApp({ config, store: createMemoryStore(config), logger });

    await send(app, 'POST', '/login?name=a', { Origin: `http://${'e'.repeat(8000)}.example` }).expect(403);

    expect(((lines[0]?.err as { origin: string }).origin).length).toBe(200);
  });
});
