import type { SessionData } from 'express-session';
import pino from 'pino';
import request from 'supertest';
import { createApp } from '../src/app';
import type { Env } from '../src/config';
import { StoreUnavailableError } from '../src/errors';
import { cookieHeader, makeApp, shouldSetCookie, testConfig, TestStore } from './helpers';

type Fault = 'get' | 'set' | 'destroy' | 'touch';

/** a store that holds sessions like any other, and fails the chosen operations with the chosen error */
class FaultyStore extends TestStore {
  readonly sessions = new Map<string, string>();
  faults = new Set<Fault>();

  constructor(private readonly error: () => Error) {
    super();
  }

  protected override indexError(): Error {
    return this.error();
  }

  override get(sid: string, cb: (err: unknown, sess?: SessionData | null) => void): void {
    if (this.faults.has('get')) return cb(this.error());
    const json = this.sessions.get(sid);
    cb(null, json ? (JSON.parse(json) as SessionData) : null);
  }

  override set(sid: string, sess: SessionData, cb?: (err?: unknown) => void): void {
    if (this.faults.has('set')) return cb?.(this.error());
    this.sessions.set(sid, JSON.stringify(sess));
    cb?.();
  }

  override destroy(sid: string, cb?: (err?: unknown) => void): void {
    if (this.faults.has('destroy')) return cb?.(this.error());
    this.sessions.delete(sid);
    cb?.();
  }

  override touch(_sid: string, _sess: SessionData, cb?: (err?: unknown) => void): void {
    if (this.faults.has('touch')) return cb?.(this.error());
    cb?.();
  }
}

// an error as a driver would throw it: a message naming the library, a stack full of file paths
function internalError(): Error {
  const err = new Error('ECONNRESET in /srv/app/node_modules/redis/dist/lib/client.js');
  err.stack = `${err.message}\n    at Socket.onData (/srv/app/node_modules/redis/dist/lib/client.js:10:5)`;
  return err;
}

function appWith(store: TestStore, env: Env = {}) {
  return createApp({ config: testConfig(env), store, logger: pino({ level: 'silent' }) });
}

async function loggedIn(store: FaultyStore, env: Env = {}): Promise<string> {
  return cookieHeader(shouldSetCookie(await request(appWith(store, env)).post('/login?name=daniel').expect(201)));
}

function expectNoInternals(body: unknown): void {
  const text = JSON.stringify(body);
  expect(text).not.toMatch(/node_modules|\/srv\/|\.js|at Socket|ECONNRESET|redis|express/i);
}

describe('an unexpected error', () => {
  it.each([
    ['get', 'GET /user', 'get', '/user'],
    ['set', 'POST /login', 'post', '/login?name=daniel'],
    ['destroy', 'POST /logout', 'post', '/logout'],
  ] as const)('when the store fails on %s during %s, then 500 with a bare message and no internals', async (fault, _what, method, path) => {
    const store = new FaultyStore(internalError);
    const cookie = await loggedIn(store);
    store.faults.add(fault);

    const res = await request(appWith(store))[method](path).set('Cookie', cookie);

    expect(res.status).toBe(500);
    expect(res.headers['content-type']).toMatch(/^application\/json/);
    expect(res.body).toEqual({ error: 'Internal server error' });
    expectNoInternals(res.body);
  });

  it('when the store fails a touch while the response is already going out, then the client still gets its answer', async () => {
    const store = new FaultyStore(internalError);
    const cookie = await loggedIn(store);
    store.faults.add('touch');

    const res = await request(appWith(store)).get('/user').set('Cookie', cookie);

    expect(res.status).toBe(200);
    expect(res.body).toEqual({ info: 'User profile info', data: { name: 'daniel' } });
  });

  it('when the app runs in production, then the answer is the same bare message', async () => {
    // production with a cookie that is not Secure-only, so a plain-HTTP test client can carry it
    const production = { NODE_ENV: 'production', SESSION_SECRET: 'x'.repeat(32), COOKIE_SECURE: 'false' };
    const store = new FaultyStore(internalError);
    const cookie = await loggedIn(store, production);
    store.faults.add('get');

    const res = await request(appWith(store, production)).get('/user').set('Cookie', cookie);

    expect(res.status).toBe(500);
    expect(res.body).toEqual({ error: 'Internal server error' });
  });
});

describe('a session store that is unavailable', () => {
  it.each([
    ['get', 'get', '/user'],
    ['set', 'post', '/login?name=daniel'],
    ['destroy', 'post', '/logout'],
  ] as const)('when %s fails as unavailable, then 503 JSON with Retry-After and no internals', async (fault, method, path) => {
    const store = new FaultyStore(() => new StoreUnavailableError(internalError()));
    const cookie = await loggedIn(store);
    store.faults.add(fault);

    const res = await request(appWith(store))[method](path).set('Cookie', cookie);

    expect(res.status).toBe(503);
    expect(res.body).toEqual({ error: expect.stringMatching(/session store unavailable/i) });
    expect(res.headers['retry-after']).toBe('5');
    expectNoInternals(res.body);
  });

  it('when the store is down, then /healthz says 503 unavailable', async () => {
    const store = new FaultyStore(internalError);
    store.faults.add('get');

    const res = await request(appWith(store)).get('/healthz');

    expect(res.status).toBe(503);
    expect(res.body).toEqual({ status: 'unavailable' });
  });

  it('when the store comes back, then the same app answers again', async () => {
    const store = new FaultyStore(() => new StoreUnavailableError(internalError()));
    const app = appWith(store);
    const cookie = await loggedIn(store);
    store.faults.add('get');
    await request(app).get('/user').set('Cookie', cookie).expect(503);

    store.faults.clear();

    // the failed read must not have cost the session
    expect(store.sessions.size).toBe(1);
    const res = await request(app).get('/user').set('Cookie', cookie).expect(200);
    expect(res.body.data).toEqual({ name: 'daniel' });
  });
});

describe('bad requests from the framework', () => {
  it('when a path holds malformed percent-encoding, then a JSON 4xx, never a 5xx', async () => {
    const res = await request(makeApp().app).get('/user/%E0%A4%A');

    expect(res.status).toBeGreaterThanOrEqual(400);
    expect(res.status).toBeLessThan(500);
    expect(res.body.error).toEqual(expect.any(String));
  });
});
