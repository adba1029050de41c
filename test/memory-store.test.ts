import path from 'node:path';
import request from 'supertest';
import type { SessionData } from 'express-session';
import { loadConfig } from '../src/config';
import { BoundedMemoryStore, StoreFullError } from '../src/stores/memory';
import { heapWarning, SESSION_HEAP_BYTES } from '../src/stores';
import { createExpiryRule } from '../src/session';
import { ROOT, spawnNode } from './processes';
import { createApp } from '../src/app';
import { cookieHeader, loadSession, logoutRacingReads, makeApp, saveSession, shouldNotSetCookie, shouldSetCookie, sleep, storedCount, storedSession, testConfig } from './helpers';

const rule = createExpiryRule({ absoluteTimeoutSeconds: 3600 });

function session(expiresInMs: number, extra: Partial<SessionData> = {}): SessionData {
  return { cookie: { expires: new Date(Date.now() + expiresInMs), originalMaxAge: expiresInMs }, ...extra } as SessionData;
}

function storeWith(max: number, pruneIntervalMs = 60_000): BoundedMemoryStore {
  return new BoundedMemoryStore({ max, expiresAt: rule, pruneIntervalMs, maxPerUser: 50 });
}

describe('BoundedMemoryStore', () => {
  it('when sessions expire, then prune removes exactly those and keeps the live ones', async () => {
    const store = storeWith(10);
    store.set('gone-1', session(20));
    store.set('gone-2', session(20));
    store.set('live', session(60_000));
    await sleep(40);

    const removed = store.prune();

    expect(removed).toBe(2);
    expect(storedCount(store)).toBe(1);
    expect(storedSession(store, 'live')).not.toBeNull();
    store.close();
  });

  it('when the prune timer fires, then expired sessions nobody reads again are swept', async () => {
    const store = storeWith(10, 30);
    store.set('forgotten', session(10));

    await sleep(120);

    expect(storedCount(store)).toBe(0);
    store.close();
  });

  it('when a session has expired but not yet been swept, then it is never served', async () => {
    const store = storeWith(10);
    store.set('old', session(10));
    await sleep(30);

    expect(storedSession(store, 'old')).toBeNull();
    expect(storedCount(store)).toBe(0);
    store.close();
  });

  it('when a session is past its absolute timeout, then it is never served, however fresh its cookie', () => {
    const store = new BoundedMemoryStore({ max: 10, expiresAt: createExpiryRule({ absoluteTimeoutSeconds: 1 }), pruneIntervalMs: 60_000, maxPerUser: 50 });
    store.set('veteran', session(60_000, { loginAt: Date.now() - 2000 }));

    expect(storedSession(store, 'veteran')).toBeNull();
    store.close();
  });

  it('when the store is full of live sessions, then a new one is refused with StoreFullError and none is evicted', () => {
    const store = storeWith(2);
    store.set('a', session(60_000));
    store.set('b', session(60_000));
    let error: unknown;

    store.set('c', session(60_000), (err) => (error = err));

    expect(error).toBeInstanceOf(StoreFullError);
    expect((error as StoreFullError).status).toBe(503);
    expect(Number((error as StoreFullError).headers['Retry-After'])).toBeGreaterThan(0);
    expect(storedSession(store, 'a')).not.toBeNull();
    expect(storedSession(store, 'b')).not.toBeNull();
    expect(storedSession(store, 'c')).toBeNull();
    store.close();
  });

  it('when the store is full and a session expired after the last sweep, then a new one is taken at once', async () => {
    const store = storeWith(1);
    store.set('old', session(20));
    // a timer sweep just before the expiry finds nothing to remove
    store.prune();
    await sleep(40);
    let error: unknown = 'not called';

    store.set('new', session(60_000), (err) => (error = err));

    expect(error).toBeUndefined();
    expect(storedSession(store, 'new')).not.toBeNull();
    store.close();
  });

  const T0 = 1_000_000;

  /** `body` with jest's clock at T0 and a store of `max`; both let go of afterwards */
  function onFakeClock(max: number, body: (store: BoundedMemoryStore) => void): void {
    jest.useFakeTimers({ now: T0 });
    const store = storeWith(max);
    try {
      body(store);
    } finally {
      store.close();
      jest.useRealTimers();
    }
  }

  // a store filled by a steady stream of logins: one session expires every 10 ms from 1 s on
  const fillExpiringOneByOne = (store: BoundedMemoryStore) => {
    for (let i = 0; i < 100; i += 1) store.set(`old-${i}`, session(1000 + i * 10));
  };

  /** a login just after each of those expiries, for a second: how many got a place */
  function loginAfterEachExpiry(store: BoundedMemoryStore): number {
    let taken = 0;
    for (let i = 0; i < 100; i += 1) {
      jest.setSystemTime(T0 + 1000 + i * 10 + 5);
      store.set(`new-${i}`, session(60_000), (err) => (err ? undefined : (taken += 1)));
    }
    return taken;
  }

  it('when a full store\'s sessions expire one after another while logins arrive, then each login takes an expired one\'s place, with no scan', () => {
    onFakeClock(100, (store) => {
      fillExpiringOneByOne(store);
      const scans = jest.spyOn(store, 'prune');

      const taken = loginAfterEachExpiry(store);

      expect(taken).toBe(100);
      expect(scans).not.toHaveBeenCalled();
      expect(storedCount(store)).toBe(100);
    });
  });

  it('when the expired sessions are not the oldest written, then a full store scans for them at most once a second', () => {
    onFakeClock(101, (store) => {
      // written first, expiring last: the front of the store is live
      store.set('long-lived', session(3_600_000));
      fillExpiringOneByOne(store);
      const scans = jest.spyOn(store, 'prune');

      const taken = loginAfterEachExpiry(store);

      expect(scans.mock.calls.length).toBe(1);
      // the first login after the first expiry got its place; the others waited for the next scan
      expect(taken).toBe(1);
      jest.setSystemTime(T0 + 2100);
      let error: unknown = 'not called';
      store.set('a-second-later', session(60_000), (err) => (error = err));
      expect(error).toBeUndefined();
      expect(scans.mock.calls.length).toBe(2);
    });
  });

  it('when a held session is saved again, then it moves behind the others, so the front stays the longest unwritten', () => {
    onFakeClock(2, (store) => {
      store.set('renewed', session(1000));
      store.set('idle', session(2000));
      // renewed: now it expires last
      store.set('renewed', session(5000));
      jest.setSystemTime(T0 + 2500);
      const scans = jest.spyOn(store, 'prune');
      let error: unknown = 'not called';

      store.set('new', session(60_000), (err) => (error = err));

      expect(error).toBeUndefined();
      // found at the front, not by a scan
      expect(scans).not.toHaveBeenCalled();
      expect(storedSession(store, 'renewed')).not.toBeNull();
      expect(storedSession(store, 'idle')).toBeNull();
    });
  });

  it('when the store is full, then an existing session can still be saved', () => {
    const store = storeWith(1);
    store.set('a', session(60_000, { user: { name: 'first' } }));
    let error: unknown = 'not called';

    store.set('a', session(60_000, { user: { name: 'second' } }), (err) => (error = err));

    expect(error).toBeUndefined();
    expect(storedSession(store, 'a')?.user).toEqual({ name: 'second' });
    store.close();
  });

  it.each([
    ['renews it', (sess: SessionData) => (sess.cookieRenewedAt = Date.now() + 1000)],
    ['changes another field (pre-login state, say)', (sess: SessionData) => Object.assign(sess, { returnTo: '/account' })],
    ['changes nothing', () => {}],
  ])('when a request that loaded a session %s and saves it after the session was destroyed, then it is not recreated', async (_what, change) => {
    const store = storeWith(10);
    const loginAt = Date.now();
    store.set('s', session(60_000, { user: { name: 'x' }, loginAt, cookieRenewedAt: loginAt }));
    const loaded = await loadSession(store, 's');

    store.destroy('s');
    change(loaded);
    await saveSession(store, 's', loaded);

    expect(storedSession(store, 's')).toBeNull();
    expect(storedCount(store)).toBe(0);
    store.close();
  });

  it('when a request that loaded a session saves it while it is held, then the change is stored', async () => {
    const store = storeWith(10);
    store.set('s', session(60_000, { user: { name: 'x' } }));
    const loaded = await loadSession(store, 's');

    loaded.user = { name: 'y' };
    await saveSession(store, 's', loaded);

    expect(storedSession(store, 's')?.user).toEqual({ name: 'y' });
    store.close();
  });

  it('when sessions are kept, then a caller changing what it got back does not change the store', () => {
    const store = storeWith(10);
    store.set('s', session(60_000, { user: { name: 'kept' } }));

    storedSession(store, 's')!.user!.name = 'changed';

    expect(storedSession(store, 's')?.user).toEqual({ name: 'kept' });
    store.close();
  });
});

describe('the memory store behind the app', () => {
  it('when SESSION_MEMORY_MAX live sessions exist, then a new login gets 503 JSON with Retry-After and the others keep working', async () => {
    const { app } = makeApp({ SESSION_MEMORY_MAX: '3' });
    const cookies: string[] = [];
    for (const name of ['a', 'b', 'c']) {
      cookies.push(cookieHeader(shouldSetCookie(await request(app).post(`/login?name=${name}`).expect(201))));
    }

    const refused = await request(app).post('/login?name=d');

    expect(refused.status).toBe(503);
    expect(refused.body).toEqual({ error: expect.stringMatching(/too many active sessions/i) });
    expect(Number(refused.headers['retry-after'])).toBeGreaterThan(0);
    shouldNotSetCookie(refused);
    const profiles = await Promise.all(cookies.map((cookie) => request(app).get('/user').set('Cookie', cookie)));
    expect(profiles.map((res) => res.body.data?.name)).toEqual(['a', 'b', 'c']);
  });

  it('when the store is full, then a logged-in user logging in again still succeeds (its old session makes room)', async () => {
    const { app } = makeApp({ SESSION_MEMORY_MAX: '1' });
    const cookie = cookieHeader(shouldSetCookie(await request(app).post('/login?name=a').expect(201)));

    const res = await request(app).post('/login?name=b').set('Cookie', cookie);

    expect(res.status).toBe(201);
  });

  it('when full sessions expire, then new logins are taken again', async () => {
    const { app } = makeApp({ SESSION_MEMORY_MAX: '2', SESSION_IDLE_TIMEOUT_SECONDS: '1' });
    await request(app).post('/login?name=a').expect(201);
    await request(app).post('/login?name=b').expect(201);
    await request(app).post('/login?name=c').expect(503);

    await sleep(1200);

    await request(app).post('/login?name=c').expect(201);
  });

  it.each([
    ['reads', 0],
    ['reads that renew the cookie (and so save the session)', 300],
  ])('when a logout races %s of the same session, then it stays logged out and out of the store', async (_what, waitMs) => {
    const config = testConfig({ SESSION_IDLE_TIMEOUT_SECONDS: '2' });
    // reads answered on a later turn, as a store with I/O answers them: reads that loaded the session before the
    // logout then save it after (the memory store alone answers at once, and no request would overlap another)
    const store = new DeferredReads({ max: 100, expiresAt: createExpiryRule(config), pruneIntervalMs: 60_000, maxPerUser: 50 });
    const app = createApp({ config, store });

    const cookie = await logoutRacingReads(app, { waitMs });

    expect((await request(app).get('/user').set('Cookie', cookie)).body).toEqual({ info: 'No data present in session' });
    expect(storedCount(store)).toBe(0);
    store.close();
  });
});

class DeferredReads extends BoundedMemoryStore {
  override get(sid: string, callback: (err: unknown, session?: SessionData | null) => void): void {
    super.get(sid, (err, sess) => setImmediate(() => callback(err, sess)));
  }
}

describe('the heap a full memory store needs', () => {
  const MB = 2 ** 20;

  it('when the store is the default size, then a 256 MB heap holds it, with no warning', () => {
    const config = loadConfig({});

    expect(config.sessionMemoryMax).toBe(100_000);
    expect(heapWarning(config, 256 * MB)).toBeUndefined();
    expect(heapWarning(config, 128 * MB)).toMatch(/SESSION_MEMORY_MAX=100000 /);
  });

  it('when SESSION_MEMORY_MAX would not fit the heap limit, then the warning names the variable and the flag', () => {
    const warning = heapWarning(loadConfig({ SESSION_MEMORY_MAX: '1000000' }), 512 * MB);

    expect(warning).toMatch(/SESSION_MEMORY_MAX=1000000 .* --max-old-space-size=\d+/);
  });

  it('when sessions live in Redis, then the heap limit does not matter', () => {
    expect(heapWarning(loadConfig({ SESSION_STORE: 'redis', SESSION_MEMORY_MAX: '100000000' }), MB)).toBeUndefined();
  });

  it('when the store holds sessions with the longest names, each of its own user, then each takes at most the 1700 bytes the estimate counts', async () => {
    const run = spawnNode(['--expose-gc', '-r', 'ts-node/register/transpile-only', path.join(ROOT, 'test', 'fixtures', 'session-heap.ts')], {});

    const { code } = await run.exited;
    const { held, bytesPerSession } = JSON.parse(run.output()) as { held: number; bytesPerSession: number };

    expect(code).toBe(0);
    expect(held).toBe(20_000);
    // a 64-emoji name alone is 256 bytes of UTF-16 in the stored JSON
    expect(bytesPerSession).toBeGreaterThan(256);
    expect(bytesPerSession).toBeLessThanOrEqual(SESSION_HEAP_BYTES);
  });
});
