import { createHash } from 'node:crypto';
import type { Express } from 'express';
import { createClient, createCluster } from 'redis';
import request from 'supertest';
import { createApp } from '../src/app';
import { DEVELOPMENT_SECRET, type Env } from '../src/config';
import { createSessionStore } from '../src/stores';
import { userTag } from '../src/session';
import { userKeys } from '../src/stores/redis-index';
import type { IndexedStore, SessionStore } from '../src/stores/types';
import {
  capturedLogger,
  cookieHeader,
  describeWith,
  loadSession,
  RedisServer,
  ClusterTopology,
  saveSession,
  sessionId,
  setCookies,
  shouldSetCookie,
  signedCookieHeader,
  sleep,
  testConfig,
} from './helpers';

export const ADMIN_TOKEN = 'an-admin-token-of-at-least-32-characters';
export const FIREFOX = 'Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:133.0) Gecko/20100101 Firefox/133.0';
export const SAFARI_IOS =
  'Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1';

type Kind = 'memory' | 'redis' | 'cluster';

interface Instance {
  app: Express;
  store: IndexedStore;
  /** the audit and admin lines the instance logged */
  lines: Record<string, unknown>[];
  raw: string[];
}

interface World {
  instance(env?: Env): Promise<Instance>;
  /** a client of the test's own on the block's redis-server (Redis only) */
  client(): ReturnType<typeof createClient>;
  /** a client of the test's own on the block's Redis or Redis Cluster, to look at keys */
  inspector(): Pick<ReturnType<typeof createClient>, 'zScore' | 'hGet'>;
}

/**
 * app instances on one store of `kind`: memory (each instance its own), one redis-server or one Redis Cluster
 * (three primaries, three replicas) for the block
 */
function world(kind: Kind): World {
  let redis: RedisServer | undefined;
  let cluster: ClusterTopology | undefined;
  let client: ReturnType<typeof createClient> | undefined;
  let clusterClient: ReturnType<typeof createCluster> | undefined;
  const opened: SessionStore[] = [];

  beforeAll(async () => {
    if (kind === 'redis') {
      redis = await RedisServer.start();
      client = createClient({ url: redis.url });
      client.on('error', () => {});
      await client.connect();
    }
    if (kind === 'cluster') {
      cluster = await ClusterTopology.start();
      clusterClient = createCluster({ rootNodes: [{ socket: { host: '127.0.0.1', port: cluster.nodes[0]!.port } }] });
      clusterClient.on('error', () => {});
      await clusterClient.connect();
    }
  });

  afterAll(async () => {
    await Promise.all(opened.map((sessions) => sessions.close().catch(() => {})));
    client?.destroy();
    clusterClient?.destroy();
    await redis?.stop();
    await cluster?.stop();
  });

  return {
    async instance(env: Env = {}) {
      const where = cluster ? { SESSION_STORE: 'redis', REDIS_CLUSTER_NODES: cluster.nodeList } : { SESSION_STORE: kind, REDIS_URL: redis?.url };
      const config = testConfig({ ...where, ADMIN_TOKEN, ...env });
      const { logger, lines, raw } = capturedLogger('info');
      const sessions = await createSessionStore(config, logger);
      await sessions.ready();
      opened.push(sessions);
      return { app: createApp({ config, store: sessions.store, logger }), store: sessions.store, lines, raw };
    },
    client() {
      if (!client) throw new Error('no single Redis in this world');
      return client;
    },
    inspector() {
      const found = client ?? clusterClient;
      if (!found) throw new Error('no Redis in a memory world');
      return found;
    },
  };
}

let names = 0;
/** a user name no other test uses: tests share a Redis */
const someone = (base = 'alice'): string => `${base}-${++names}`;

export interface Login {
  cookie: string;
  sid: string;
  /** the cookie's value as the browser holds it */
  value: string;
}

export async function login(app: Express, name: string, userAgent = FIREFOX, forwardedFor?: string): Promise<Login> {
  // an ID of the login's own, so the audit line it causes can be told from any other request's
  let req = request(app).post(`/login?name=${encodeURIComponent(name)}`).set('User-Agent', userAgent).set('X-Request-Id', `login-${userTag(name)}`);
  if (forwardedFor) req = req.set('X-Forwarded-For', forwardedFor);
  const cookie = shouldSetCookie(await req.expect(201));
  return { cookie: cookieHeader(cookie), sid: sessionId(cookie), value: cookie.value };
}

interface Listed {
  id: string;
  current?: boolean;
  createdAt: string;
  lastSeenAt: string;
  expiresAt: string;
  browser: string;
  os: string;
  ip: string;
}

async function list(app: Express, as: Login): Promise<Listed[]> {
  const res = await request(app).get('/sessions').set('Cookie', as.cookie).expect(200);
  return (res.body as { sessions: Listed[] }).sessions;
}

async function handleOf(app: Express, as: Login): Promise<string> {
  const current = (await list(app, as)).find((session) => session.current);
  if (!current) throw new Error('the session does not list itself');
  return current.id;
}

async function whoIs(app: Express, as: Login): Promise<string | undefined> {
  const res = await request(app).get('/user').set('Cookie', as.cookie).expect(200);
  return (res.body as { data?: { name: string } }).data?.name;
}

const admin = (req: request.Test): request.Test => req.set('Authorization', `Bearer ${ADMIN_TOKEN}`);

async function adminList(app: Express, name: string): Promise<Listed[]> {
  const res = await admin(request(app).get(`/admin/users/${encodeURIComponent(name)}/sessions`)).expect(200);
  return (res.body as { sessions: Listed[] }).sessions;
}

const ended = (lines: Record<string, unknown>[], reason: string) =>
  lines.filter((line) => line.event === 'session_ended' && line.reason === reason);

function contract(kind: Kind) {
  return () => {
    const own = world(kind);
    const { instance } = own;

    it('when a user has two sessions, then GET /sessions lists both, most recently seen first, the current one marked', async () => {
      const { app } = await instance({ TRUST_PROXY: 'loopback' });
      const name = someone();
      const phone = await login(app, name, SAFARI_IOS, '198.51.100.23');
      await sleep(5);
      const laptop = await login(app, name, FIREFOX, '2001:db8:7:8::1');

      const sessions = await list(app, phone);

      expect(sessions).toHaveLength(2);
      const [first, second] = sessions;
      expect(first).toEqual({
        id: expect.any(String),
        current: false,
        createdAt: expect.any(String),
        lastSeenAt: first?.createdAt,
        expiresAt: expect.any(String),
        browser: 'Firefox 133',
        os: 'Windows 10',
        ip: '2001:db8:7::',
      });
      expect(second).toMatchObject({ current: true, browser: 'Safari 17', os: 'iOS 17', ip: '198.51.100.0' });
      expect(Date.parse(first?.lastSeenAt ?? '')).toBeGreaterThan(Date.parse(second?.lastSeenAt ?? ''));
      // the idle timeout from login, give or take the moments between drawing the session and stamping the login
      const lifetime = Date.parse(first?.expiresAt ?? '') - Date.parse(first?.createdAt ?? '');
      expect(Math.abs(lifetime - 1800 * 1000)).toBeLessThan(1000);
      // a handle reveals nothing of the session ID: not the ID, not a part of it, not its hash
      for (const { id } of sessions) {
        for (const sid of [phone.sid, laptop.sid]) {
          expect(sid.includes(id) || id.includes(sid) || id.includes(sid.slice(0, 8))).toBe(false);
          expect([createHash('sha256').update(sid).digest('hex'), createHash('sha256').update(sid).digest('base64url')].some((h) => h.includes(id))).toBe(false);
        }
      }
    });

    it('when no User-Agent is sent, then browser and OS are "Unknown"; an IPv4-mapped address is truncated as IPv4', async () => {
      const { app } = await instance({ TRUST_PROXY: 'loopback' });
      const name = someone();
      const res = await request(app).post(`/login?name=${name}`).set('X-Forwarded-For', '::ffff:203.0.113.77').unset('User-Agent').expect(201);
      const me = { cookie: cookieHeader(shouldSetCookie(res)), sid: '', value: '' };

      expect(await list(app, me)).toEqual([expect.objectContaining({ browser: 'Unknown', os: 'Unknown', ip: '203.0.113.0' })]);
    });

    it('when a session ends another of the same user, then 204, that one is anonymous at once and no longer listed; a second try is 404', async () => {
      const { app, lines } = await instance();
      const name = someone();
      const mine = await login(app, name);
      const other = await login(app, name, SAFARI_IOS);
      const otherHandle = await handleOf(app, other);

      await request(app).delete(`/sessions/${otherHandle}`).set('Cookie', mine.cookie).expect(204);

      expect(await whoIs(app, other)).toBeUndefined();
      expect(await whoIs(app, mine)).toBe(name);
      expect((await list(app, mine)).map((s) => s.id)).toEqual([await handleOf(app, mine)]);
      const again = await request(app).delete(`/sessions/${otherHandle}`).set('Cookie', mine.cookie);
      expect(again.status).toBe(404);
      expect(again.body).toEqual({ error: 'Session not found' });
      expect(ended(lines, 'revoked')).toEqual([expect.objectContaining({ user: name, browser: 'Safari 17' })]);
    });

    it('when a session ends itself by its handle, then it is a logout: 204, the cookie cleared, the session gone', async () => {
      const { app, lines } = await instance();
      const name = someone();
      const me = await login(app, name);

      const res = await request(app).delete(`/sessions/${await handleOf(app, me)}`).set('Cookie', me.cookie).expect(204);

      expect(setCookies(res).find((c) => c.name === 'sid')?.attributes.expires).toBe('Thu, 01 Jan 1970 00:00:00 GMT');
      expect(await whoIs(app, me)).toBeUndefined();
      expect(ended(lines, 'logout')).toHaveLength(1);
    });

    it.each([
      ['a handle never issued', async () => 'bm90LWEtaGFuZGxl'],
      ['another user\'s session', async (app: Express) => handleOf(app, await login(app, someone('mallory')))],
    ])('when the handle is %s, then 404 "Session not found" and nothing ends', async (_what, target) => {
      const { app } = await instance();
      const me = await login(app, someone());
      const handle = await target(app);
      const before = await Promise.all((await list(app, me)).map((s) => s.id));

      const res = await request(app).delete(`/sessions/${handle}`).set('Cookie', me.cookie);

      expect(res.status).toBe(404);
      expect(res.body).toEqual({ error: 'Session not found' });
      expect((await list(app, me)).map((s) => s.id)).toEqual(before);
    });

    it('when another user\'s handle is tried, then that user\'s session lives on', async () => {
      const { app } = await instance();
      const victim = await login(app, someone('victim'));
      const attacker = await login(app, someone('mallory'));

      await request(app).delete(`/sessions/${await handleOf(app, victim)}`).set('Cookie', attacker.cookie).expect(404);

      expect(await whoIs(app, victim)).toBeDefined();
    });

    it('when a user ends all other sessions, then {"ended":N}, the others are anonymous and the current one stays', async () => {
      const { app } = await instance();
      const name = someone();
      const [a, b, c] = [await login(app, name), await login(app, name, SAFARI_IOS), await login(app, name)];
      const bystander = await login(app, someone('bob'));

      const res = await request(app).delete('/sessions').set('Cookie', a.cookie).expect(200);

      expect(res.body).toEqual({ ended: 2 });
      expect([await whoIs(app, a), await whoIs(app, b), await whoIs(app, c)]).toEqual([name, undefined, undefined]);
      expect(await list(app, a)).toEqual([expect.objectContaining({ current: true })]);
      expect(await whoIs(app, bystander)).toBeDefined();
    });

    it('when the handle is left empty (DELETE /sessions/), then 404 and no other session ends', async () => {
      const { app } = await instance();
      const name = someone();
      const [a, b] = [await login(app, name), await login(app, name)];

      const res = await request(app).delete('/sessions/').set('Cookie', a.cookie);

      expect(res.status).toBe(404);
      expect(res.body).toEqual({ error: 'Session not found' });
      expect(await whoIs(app, b)).toBe(name);
    });

    it('when not logged in, then GET /sessions, DELETE /sessions and DELETE /sessions/:id are 401 "Not logged in"', async () => {
      const { app } = await instance();
      for (const res of [await request(app).get('/sessions'), await request(app).delete('/sessions'), await request(app).delete('/sessions/abc')]) {
        expect(res.status).toBe(401);
        expect(res.body).toEqual({ error: 'Not logged in' });
      }
    });

    it('when an operator lists and ends a user\'s sessions, then every one ends and each is logged revoked_by_admin', async () => {
      const { app, lines } = await instance();
      const name = someone();
      const [a, b] = [await login(app, name), await login(app, name, SAFARI_IOS)];
      const bystander = await login(app, someone('bob'));

      const listed = await admin(request(app).get(`/admin/users/${encodeURIComponent(name)}/sessions`)).expect(200);
      const res = await admin(request(app).delete(`/admin/users/${encodeURIComponent(name)}/sessions`)).expect(200);

      expect((listed.body as { sessions: Listed[] }).sessions).toHaveLength(2);
      expect((listed.body as { sessions: Listed[] }).sessions.every((s) => !('current' in s))).toBe(true);
      expect(res.body).toEqual({ ended: 2 });
      expect([await whoIs(app, a), await whoIs(app, b)]).toEqual([undefined, undefined]);
      expect(await whoIs(app, bystander)).toBeDefined();
      expect(ended(lines, 'revoked_by_admin')).toHaveLength(2);
      expect(lines).toContainEqual(expect.objectContaining({ event: 'authz_admin', action: 'end_user_sessions', user: name, ended: 2 }));
    });

    it('when an operator ends everyone, then every session ends and a new login works', async () => {
      const { app } = await instance();
      const a = await login(app, someone());
      const b = await login(app, someone('bob'));

      const res = await admin(request(app).delete('/admin/sessions')).expect(200);

      expect(res.body).toEqual({ ended: kind === 'memory' ? 2 : null });
      expect([await whoIs(app, a), await whoIs(app, b)]).toEqual([undefined, undefined]);
      await sleep(2);
      const fresh = await login(app, someone());
      expect(await whoIs(app, fresh)).toBeDefined();
    });

    it('when a login goes past SESSION_MAX_PER_USER, then the least recently seen session ends (evicted) and the login succeeds', async () => {
      // renewal interval 1 s: a use after it is written as the session's last-seen time
      const { app, lines } = await instance({ SESSION_MAX_PER_USER: '3', SESSION_IDLE_TIMEOUT_SECONDS: '10' });
      const name = someone();
      const first = await login(app, name);
      const second = await login(app, name);
      const third = await login(app, name);
      await sleep(1100);
      await request(app).get('/user').set('Cookie', first.cookie).expect(200);

      const fourth = await login(app, name);

      expect(await whoIs(app, second)).toBeUndefined();
      expect([await whoIs(app, first), await whoIs(app, third), await whoIs(app, fourth)]).toEqual([name, name, name]);
      expect(await list(app, fourth)).toHaveLength(3);
      expect(ended(lines, 'evicted')).toHaveLength(1);
    });

    it('when a logged-in session logs in again, then the old ID leaves the index with the session: one session listed', async () => {
      const { app } = await instance();
      const name = someone();
      const before = await login(app, name);

      const res = await request(app).post(`/login?name=${name}`).set('Cookie', before.cookie).expect(201);
      const after = { cookie: cookieHeader(shouldSetCookie(res)), sid: '', value: '' };

      expect(await list(app, after)).toHaveLength(1);
      expect(await whoIs(app, before)).toBeUndefined();
    });

    it.each([
      ['idle', { SESSION_IDLE_TIMEOUT_SECONDS: '2' }, 'idle_timeout'],
      ['absolute', { SESSION_IDLE_TIMEOUT_SECONDS: '60', SESSION_ABSOLUTE_TIMEOUT_SECONDS: '2' }, 'absolute_timeout'],
    ] as const)('when the %s timeout ends a session, then it leaves the list, logged once as %s', async (_which, env, reason) => {
      const { app, lines } = await instance(env);
      const name = someone();
      await login(app, name);
      await sleep(1500);
      // a second session keeps the user's index alive past the first one's end (on Redis, it expires with the last)
      const fresh = await login(app, name);
      await sleep(800);

      const sessions = await list(app, fresh);
      await list(app, fresh);

      expect(sessions).toEqual([expect.objectContaining({ current: true })]);
      expect(ended(lines, reason)).toHaveLength(1);
    });

    it('when a name holds braces, spaces and emoji, then its sessions are listed and ended as any other', async () => {
      const { app } = await instance();
      const name = `{x} }{ ${someone()} 🙂`;
      const [a, b] = [await login(app, name), await login(app, name)];

      expect(await list(app, a)).toHaveLength(2);
      await admin(request(app).get(`/admin/users/${encodeURIComponent(name)}/sessions`)).expect(200, /"sessions":\[\{/);
      await request(app).delete('/sessions').set('Cookie', a.cookie).expect(200, { ended: 1 });
      expect(await whoIs(app, b)).toBeUndefined();
    });

    describe.each([
      ['DELETE /sessions/:id from another session', 'revoked'],
      ['DELETE /sessions from another session', 'revoked'],
      ['an operator ending the user', 'revoked_by_admin'],
      ['an operator ending everyone', 'revoked_by_admin'],
      ['a login past the cap', 'evicted'],
    ])('when %s ends session X', (how) => {
      async function end(app: Express, name: string, other: Login, x: Login): Promise<void> {
        if (how.startsWith('DELETE /sessions/:id')) await request(app).delete(`/sessions/${await handleOf(app, x)}`).set('Cookie', other.cookie).expect(204);
        else if (how.startsWith('DELETE /sessions')) await request(app).delete('/sessions').set('Cookie', other.cookie).expect(200);
        else if (how.includes('the user')) await admin(request(app).delete(`/admin/users/${encodeURIComponent(name)}/sessions`)).expect(200);
        else if (how.includes('everyone')) await admin(request(app).delete('/admin/sessions')).expect(200);
        else await login(app, name);
      }

      it('then a request that loaded X before and saves it after (renewal, touch) does not bring it back', async () => {
        const { app, store } = await instance({ SESSION_MAX_PER_USER: '2' });
        const name = someone();
        const x = await login(app, name);
        const other = await login(app, name);
        const handle = await handleOf(app, x);
        const loaded = await loadSession(store, x.sid);

        await end(app, name, other, x);
        loaded.cookieRenewedAt = Date.now();
        loaded.cookie.maxAge = 1800 * 1000;
        await saveSession(store, x.sid, loaded);
        // what express-session calls for a session read but not changed, where a store has it
        await new Promise<void>((resolve) => (store.touch ? store.touch(x.sid, loaded, () => resolve()) : resolve()));
        if (kind !== 'memory' && how !== 'an operator ending everyone') {
          // nor its index entry (looked at first: a listing would weed it out). Ending everyone on Redis leaves the
          // entries to the stamp: each goes when its user's index is next read
          const [expiry, seen, info] = userKeys(name);
          const client = own.inspector();
          expect([await client.zScore(expiry, handle), await client.zScore(seen, handle), await client.hGet(info, handle)]).toEqual([null, null, null]);
        }

        expect(await whoIs(app, x)).toBeUndefined();
        expect(await new Promise((resolve) => store.get(x.sid, (_err, sess) => resolve(sess)))).toBeNull();
        expect((await adminList(app, name)).map((s) => s.id)).not.toContain(handle);
      });
    });

    it.each(['DELETE /sessions/:X', 'an operator ending the user'])(
      'when 40 concurrent GET /user on X, some renewing, race %s, then X stays gone',
      async (how) => {
        // renewal interval 1 s: after the pause, the first reads renew and write X
        const { app } = await instance({ SESSION_IDLE_TIMEOUT_SECONDS: '10' });
        const name = someone();
        const x = await login(app, name);
        const other = await login(app, name);
        const handle = await handleOf(app, x);
        await sleep(1100);

        const read = () => request(app).get('/user').set('Cookie', x.cookie);
        const revoke =
          how === 'DELETE /sessions/:X'
            ? request(app).delete(`/sessions/${handle}`).set('Cookie', other.cookie).expect(204)
            : admin(request(app).delete(`/admin/users/${encodeURIComponent(name)}/sessions`)).expect(200);
        await Promise.all([...Array.from({ length: 20 }, read), revoke, ...Array.from({ length: 20 }, read)]);
        await sleep(50);

        expect(await whoIs(app, x)).toBeUndefined();
        expect((await adminList(app, name)).map((s) => s.id)).not.toContain(handle);
      },
    );

    it('when sessions start and end, then the audit log names user, IP and browser, never a session ID or cookie value', async () => {
      const { app, lines, raw } = await instance();
      const name = someone();
      const a = await login(app, name);
      const b = await login(app, name);
      await request(app).delete('/sessions').set('Cookie', a.cookie).set('X-Request-Id', 'end-others').expect(200);
      await request(app).post('/logout').set('Cookie', a.cookie).set('X-Request-Id', 'log-out').expect(204);

      const events = lines.filter((line) => line.event === 'session_created' || line.event === 'session_ended');
      // each line carries the ID of the request that caused it, through the store's own work
      expect(events.map((line) => [line.event, line.reason, line.requestId])).toEqual([
        ['session_created', undefined, `login-${userTag(name)}`],
        ['session_created', undefined, `login-${userTag(name)}`],
        ['session_ended', 'revoked', 'end-others'],
        ['session_ended', 'logout', 'log-out'],
      ]);
      for (const line of events) {
        expect(line).toMatchObject({ level: 30, user: name, ip: expect.stringMatching(/\.0$|::$/), browser: 'Firefox 133', session: expect.any(String) });
      }
      // one session's lines share its hash, and the hash is not the ID's plain hash
      expect(events[0]?.session).toBe(events[3]?.session);
      const text = raw.join('');
      for (const secret of [a.sid, b.sid, a.value, b.value, decodeURIComponent(a.value), createHash('sha256').update(a.sid).digest('hex').slice(0, 16)]) {
        expect(text).not.toContain(secret);
      }
    });
  };
}

describe('active sessions on the memory store', contract('memory'));
describeWith('redis-server', 'active sessions on Redis', contract('redis'));
describeWith(['redis-server', 'redis-cli'], 'active sessions on Redis Cluster', contract('cluster'));

describe('the admin API', () => {
  const { instance } = world('memory');

  it('when ADMIN_TOKEN is unset, then every admin path is 404 as unknown paths are', async () => {
    const { app } = await instance({ ADMIN_TOKEN: '' });
    for (const res of [
      await admin(request(app).get('/admin/users/alice/sessions')),
      await admin(request(app).delete('/admin/users/alice/sessions')),
      await admin(request(app).delete('/admin/sessions')),
    ]) {
      expect(res.status).toBe(404);
      expect(res.body).toEqual({ error: 'Not found' });
    }
  });

  it.each([
    ['no Authorization header', undefined],
    ['a wrong token', `Bearer ${ADMIN_TOKEN.slice(0, -1)}x`],
    ['the token as Basic credentials', `Basic ${ADMIN_TOKEN}`],
    ['the token with a prefix', `Bearer x${ADMIN_TOKEN}`],
  ])('when a request carries %s, then 401 "Unauthorized" with WWW-Authenticate: Bearer, and nothing ends', async (_what, authorization) => {
    const { app } = await instance();
    const victim = await login(app, 'victim');

    for (const req of [request(app).get('/admin/users/victim/sessions'), request(app).delete('/admin/users/victim/sessions'), request(app).delete('/admin/sessions')]) {
      const res = await (authorization ? req.set('Authorization', authorization) : req);
      expect(res.status).toBe(401);
      expect(res.body).toEqual({ error: 'Unauthorized' });
      expect(res.headers['www-authenticate']).toBe('Bearer');
    }
    expect(await whoIs(app, victim)).toBe('victim');
  });

  it('when the right token is sent, then the API answers and the log holds the action, never the token', async () => {
    const { app, raw } = await instance();
    await login(app, 'victim');

    await admin(request(app).delete('/admin/users/victim/sessions')).expect(200, { ended: 1 });

    expect(raw.join('')).toContain('end_user_sessions');
    expect(raw.join('')).not.toContain(ADMIN_TOKEN);
  });
});

describe('no response body holds a session ID or cookie value', () => {
  const { instance } = world('memory');

  it('when every endpoint is called with a live session, then no body holds its ID or cookie', async () => {
    const { app } = await instance();
    const me = await login(app, 'carol');
    const other = await login(app, 'carol');
    const handle = await handleOf(app, other);
    const bodies: string[] = [];
    const keep = (res: request.Response) => bodies.push(res.text);
    const as = (req: request.Test, who = me) => req.set('Cookie', who.cookie);

    keep(await as(request(app).get('/user')));
    keep(await as(request(app).get('/sessions')));
    keep(await as(request(app).get('/healthz')));
    keep(await admin(request(app).get('/admin/users/carol/sessions')));
    keep(await as(request(app).delete('/sessions/unknown')));
    keep(await as(request(app).delete(`/sessions/${handle}`)));
    keep(await as(request(app).delete('/sessions')));
    keep(await as(request(app).post('/login?name=carol')));
    keep(await as(request(app).get('/nowhere')));
    keep(await as(request(app).put('/sessions')));
    keep(await admin(request(app).delete('/admin/users/carol/sessions')));
    keep(await admin(request(app).delete('/admin/sessions')));
    keep(await as(request(app).post('/logout')));

    expect(bodies.filter((body) => body.length > 0).length).toBeGreaterThan(8);
    for (const secret of [me.sid, other.sid, me.value, other.value, decodeURIComponent(me.value)]) {
      for (const body of bodies) expect(body).not.toContain(secret);
    }
  });
});

describeWith('redis-server', 'active sessions shared by instances on one Redis', () => {
  const own = world('redis');
  const { instance } = own;

  it('when a session is ended on A, then B refuses it at its next request', async () => {
    const [a, b] = [await instance(), await instance()];
    const name = someone();
    const x = await login(a.app, name);
    const other = await login(a.app, name);
    expect(await whoIs(b.app, x)).toBe(name);

    await request(a.app).delete(`/sessions/${await handleOf(a.app, x)}`).set('Cookie', other.cookie).expect(204);

    expect(await whoIs(b.app, x)).toBeUndefined();
  });

  it('when "end everyone" runs on A, then sessions B serves end', async () => {
    const [a, b] = [await instance(), await instance()];
    const onB = await login(b.app, someone());
    expect(await whoIs(b.app, onB)).toBeDefined();

    await admin(request(a.app).delete('/admin/sessions')).expect(200, { ended: null });

    expect(await whoIs(b.app, onB)).toBeUndefined();
  });

  it('when an index entry is deleted by hand, then "end all others", the operator\'s "end all" for its user and "end everyone" still end it', async () => {
    const { app } = await instance();
    const client = own.client();
    const drop = async (name: string, x: Login) => {
      const handle = await handleOf(app, x);
      const [expiry, seen, info] = userKeys(name);
      await client.multi().zRem(expiry, handle).zRem(seen, handle).hDel(info, handle).exec();
      return handle;
    };

    for (const how of ['others', 'user', 'everyone'] as const) {
      const name = someone();
      const x = await login(app, name);
      const other = await login(app, name);
      const handle = await drop(name, x);
      expect((await list(app, other)).map((s) => s.id)).not.toContain(handle);
      expect(await whoIs(app, x)).toBe(name);
      await sleep(2);

      if (how === 'others') await request(app).delete('/sessions').set('Cookie', other.cookie).expect(200);
      if (how === 'user') await admin(request(app).delete(`/admin/users/${encodeURIComponent(name)}/sessions`)).expect(200);
      if (how === 'everyone') await admin(request(app).delete('/admin/sessions')).expect(200);

      expect(await whoIs(app, x)).toBeUndefined();
      expect(await client.exists(`sess:${x.sid}`)).toBe(0);
    }
  });

  it('when a user has sessions, then every index key has a TTL no later than the last session\'s end, and all share one slot whatever the name', async () => {
    const { app } = await instance({ SESSION_IDLE_TIMEOUT_SECONDS: '100' });
    const client = own.client();
    const name = `{${someone()}} 🙂 x`;
    const x = await login(app, name);
    await request(app).delete('/sessions').set('Cookie', x.cookie).expect(200);

    const keys = userKeys(name);
    const tags = keys.map((key) => /\{([^}]*)\}/.exec(key)?.[1]);
    expect(new Set(tags).size).toBe(1);
    expect(tags[0]).toBe(createHash('sha256').update(name).digest('base64url').slice(0, 22));
    // the user's tag starts each of their session IDs: the stamps are read with the session
    expect(x.sid.startsWith(tags[0] ?? '-')).toBe(true);
    for (const key of keys) {
      expect(await client.exists(key)).toBe(1);
      const ttl = await client.pTTL(key);
      expect(ttl).toBeGreaterThan(0);
    }
    for (const key of keys.slice(0, 3)) expect(await client.pTTL(key)).toBeLessThanOrEqual(100_000);
    // no key anywhere without an expiry
    for (const key of await client.keys('*')) expect(await client.pTTL(key)).not.toBe(-1);
  });

  it('when the user\'s last session expires, then its index keys expire with it', async () => {
    const { app } = await instance({ SESSION_IDLE_TIMEOUT_SECONDS: '1' });
    const name = someone();
    await login(app, name);
    const [expiry, seen, info] = userKeys(name);
    expect(await own.client().exists([expiry, seen, info])).toBe(3);

    await sleep(1200);

    expect(await own.client().exists([expiry, seen, info])).toBe(0);
  });

  it('when a session is gone but its entry is not (a crash between the two deletes), then the listing drops the entry', async () => {
    const { app } = await instance();
    const name = someone();
    const me = await login(app, name);
    const ghost = await login(app, name);
    const handle = await handleOf(app, ghost);

    await own.client().del(`sess:${ghost.sid}`);

    expect((await list(app, me)).map((s) => s.id)).not.toContain(handle);
    expect(await own.client().hGet(userKeys(name)[2], handle)).toBeNull();
  });

  it('when a renewal writes its index entry, then it also drops (and logs) the entries that have expired meanwhile', async () => {
    // idle 2 s, renewal interval 0.2 s
    const { app, lines } = await instance({ SESSION_IDLE_TIMEOUT_SECONDS: '2' });
    const name = someone();
    await login(app, name);
    await sleep(1000);
    const later = await login(app, name);
    await sleep(1300);

    // the first session has expired; the second is renewed: its UPDATE is the only index write since
    await request(app).get('/user').set('Cookie', later.cookie).expect(200);

    expect(ended(lines, 'idle_timeout').filter((line) => line.user === name)).toHaveLength(1);
  });

  it('when "end everyone" has run and a login then goes past the cap, then the sessions it ended are logged revoked_by_admin, not evicted', async () => {
    const { app, lines } = await instance({ SESSION_MAX_PER_USER: '2' });
    const name = someone();
    await login(app, name);
    await login(app, name);
    await admin(request(app).delete('/admin/sessions')).expect(200);
    await sleep(2);

    const fresh = await login(app, name);

    expect(ended(lines, 'evicted')).toEqual([]);
    expect(ended(lines, 'revoked_by_admin').filter((line) => line.user === name)).toHaveLength(2);
    expect(await list(app, fresh)).toHaveLength(1);
  });

  it('when a session from before sessions were indexed (no handle) is presented, then it is served, and the stamps end it', async () => {
    const { app } = await instance();
    const client = own.client();
    const plant = async (name: string, id: string) => {
      const now = Date.now();
      const legacy = { cookie: { originalMaxAge: 1_800_000, expires: new Date(now + 1_800_000).toISOString(), httpOnly: true, path: '/', sameSite: 'lax' }, user: { name }, loginAt: now, cookieRenewedAt: now };
      await client.set(`sess:${id}`, JSON.stringify(legacy), { expiration: { type: 'EX', value: 1800 } });
      return signedCookieHeader(id, DEVELOPMENT_SECRET);
    };
    const name = someone();
    const old = await plant(name, 'legacy-session-id-of-32-characters-a');
    const other = await plant(someone(), 'legacy-session-id-of-32-characters-b');
    const current = await login(app, name);
    expect((await request(app).get('/user').set('Cookie', old)).body).toEqual({ info: 'User profile info', data: { name } });
    await sleep(2);

    await request(app).delete('/sessions').set('Cookie', current.cookie).expect(200);
    expect((await request(app).get('/user').set('Cookie', old)).body).toEqual({ info: 'No data present in session' });
    expect(await client.exists('sess:legacy-session-id-of-32-characters-a')).toBe(0);

    await admin(request(app).delete('/admin/sessions')).expect(200);
    expect((await request(app).get('/user').set('Cookie', other)).body).toEqual({ info: 'No data present in session' });
  });

  it('when Redis has lost its scripts (a restart, a failover, SCRIPT FLUSH), then the index loads them again by itself', async () => {
    const { app } = await instance();
    const name = someone();
    const me = await login(app, name);
    await own.client().scriptFlush();

    expect(await list(app, me)).toHaveLength(1);
    await login(app, name);
    expect(await list(app, me)).toHaveLength(2);
  });
});
