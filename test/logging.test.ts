import type { SessionData } from 'express-session';
import request from 'supertest';
import { createApp } from '../src/app';
import type { Env } from '../src/config';
import { StoreUnavailableError } from '../src/errors';
import { sessionAudit } from '../src/logger';
import { createMemoryStore } from '../src/stores';
import { capturedLogger, testConfig, TestStore } from './helpers';

/** the app at LOG_LEVEL=info with its log kept; `store` in place of the memory store when given */
function loggedApp(env: Env = {}, store?: TestStore) {
  const config = testConfig({ LOG_LEVEL: 'info', ...env });
  const { logger, lines, raw } = capturedLogger('info');
  // the memory store tells the same log of each session's start and end, as the server wires it
  return { app: createApp({ config, store: store ?? createMemoryStore(config, sessionAudit(logger, config.secrets)), logger }), lines, raw };
}

/** a store that cannot be reached: every read fails as the Redis store fails when Redis stalls */
class UnreachableStore extends TestStore {
  override get(_sid: string, cb: (err: unknown, sess?: SessionData | null) => void): void {
    cb(new StoreUnavailableError(new Error('Redis did not answer within 2000 ms')));
  }
  override set(_sid: string, _sess: SessionData, cb?: (err?: unknown) => void): void {
    cb?.(new StoreUnavailableError(new Error('Redis did not answer within 2000 ms')));
  }
  override destroy(_sid: string, cb?: (err?: unknown) => void): void {
    cb?.();
  }
}

/** a store whose writes fail with a bug's error: nothing the server meant */
class BrokenStore extends UnreachableStore {
  override set(_sid: string, _sess: SessionData, cb?: (err?: unknown) => void): void {
    cb?.(new TypeError("Cannot read properties of undefined (reading 'cookie')"));
  }
}

describe('the log of a refused request', () => {
  it.each([
    ['the memory store is full (503)', { SESSION_MEMORY_MAX: '1' }, undefined, 503, 'StoreFullError'],
    ['the login limit is reached (429)', { LOGIN_RATE_LIMIT_PER_MINUTE: '1' }, undefined, 429, 'HttpError'],
    ['the store is unavailable (503)', {}, new UnreachableStore(), 503, 'StoreUnavailableError'],
  ] as const)('when %s, then the request is one short warn line, with no stack', async (_what, env, store, status, type) => {
    const { app, lines, raw } = loggedApp(env, store);
    if (!store) await request(app).post('/login?name=first').expect(201);
    const before = lines.length;

    await request(app).post('/login?name=second').expect(status);

    const logged = lines.slice(before);
    expect(logged).toEqual([
      expect.objectContaining({ level: 40, req: { method: 'POST', path: '/login' }, res: { status }, err: expect.objectContaining({ type }) }),
    ]);
    const text = raw.slice(before).join('');
    expect(text).not.toMatch(/stack| {4}at /);
    expect(Buffer.byteLength(text)).toBeLessThan(400);
  });

  it('when the store is unavailable, then the line says why in a few words', async () => {
    const { app, lines } = loggedApp({}, new UnreachableStore());

    await request(app).post('/login?name=a').expect(503);

    expect(lines.at(-1)?.err).toEqual({ type: 'StoreUnavailableError', message: 'Session store unavailable, try again shortly', cause: 'Redis did not answer within 2000 ms' });
  });

  it('when something unexpected fails, then the request is one error line, with the stack', async () => {
    const { app, lines } = loggedApp({}, new BrokenStore());

    await request(app).post('/login?name=a').expect(500);

    expect(lines).toEqual([expect.objectContaining({ level: 50, res: { status: 500 }, err: expect.objectContaining({ type: 'TypeError', stack: expect.stringContaining('TypeError') }) })]);
  });

  it('when express-rate-limit finds TRUST_PROXY=true in development, then its warning is a log line, not a stack on stderr', async () => {
    const stderr = jest.spyOn(console, 'error').mockImplementation(() => {});
    const warn = jest.spyOn(console, 'warn').mockImplementation(() => {});
    try {
      const { app, lines } = loggedApp({ TRUST_PROXY: 'true', LOGIN_RATE_LIMIT_PER_MINUTE: '5' });

      await request(app).post('/login?name=a').expect(201);

      expect(lines).toContainEqual(expect.objectContaining({ code: 'ERR_ERL_PERMISSIVE_TRUST_PROXY', msg: expect.stringMatching(/trust proxy/i) }));
      expect(stderr).not.toHaveBeenCalled();
      expect(warn).not.toHaveBeenCalled();
    } finally {
      stderr.mockRestore();
      warn.mockRestore();
    }
  });
});

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;

describe('request IDs', () => {
  it.each([
    ['letters, digits and . _ : -', 'abc-123.XYZ_9:0'],
    ['128 characters', 'a'.repeat(128)],
  ])('when X-Request-Id is %s, then it is kept and echoed', async (_what, id) => {
    const { app } = loggedApp();

    const res = await request(app).get('/user').set('X-Request-Id', id);

    expect(res.headers['x-request-id']).toBe(id);
  });

  it.each([
    ['129 characters', 'a'.repeat(129)],
    ['empty', ''],
    ['a tab (a control character)', 'abc\tdef'],
    ['a space', 'abc def'],
    ['two values joined by a comma', 'abc,def'],
    ['a character outside ASCII', 'caf\u00e9'],
    ['a would-be log line', 'x"}\\n{"level":60'],
  ])('when X-Request-Id is %s, then a new UUID replaces it', async (_what, id) => {
    const { app, lines } = loggedApp();

    const res = await request(app).get('/user').set('X-Request-Id', id);

    expect(res.headers['x-request-id']).toMatch(UUID);
    expect(lines.at(-1)?.requestId).toBe(res.headers['x-request-id']);
  });

  it('when no X-Request-Id is sent, then every answer has a new one, errors included', async () => {
    const { app } = loggedApp();

    const answers = await Promise.all([request(app).get('/user'), request(app).get('/nowhere'), request(app).post('/login')]);

    expect(answers.map((res) => res.status)).toEqual([200, 404, 400]);
    for (const res of answers) expect(res.headers['x-request-id']).toMatch(UUID);
    expect(new Set(answers.map((res) => res.headers['x-request-id'])).size).toBe(3);
  });

  it('when a login and a logout run, then their request lines and the audit lines they cause carry their own IDs', async () => {
    const { app, lines } = loggedApp();

    const res = await request(app).post('/login?name=traced').set('X-Request-Id', 'login-1').expect(201);
    const cookie = res.headers['set-cookie']![0]!.split(';', 1)[0]!;
    await request(app).post('/logout').set('Cookie', cookie).set('X-Request-Id', 'logout-1').expect(204);

    expect(lines.map((line) => [line.msg, line.requestId])).toEqual([
      ['session_created', 'login-1'],
      ['request completed', 'login-1'],
      ['session_ended: logout', 'logout-1'],
      ['request completed', 'logout-1'],
    ]);
  });

  it('when 30 logins run at once, then each audit line carries the ID of the request that caused it', async () => {
    const { app, lines } = loggedApp();

    await Promise.all(Array.from({ length: 30 }, (_, i) => request(app).post(`/login?name=user-${i}`).set('X-Request-Id', `req-${i}`).expect(201)));

    const created = lines.filter((line) => line.event === 'session_created');
    expect(created).toHaveLength(30);
    for (const line of created) expect(line.requestId).toBe(`req-${String(line.user).slice('user-'.length)}`);
  });

  it('when a refusal is logged, then its warn line carries the ID too', async () => {
    const { app, lines } = loggedApp({}, new UnreachableStore());

    await request(app).post('/login?name=a').set('X-Request-Id', 'refused-1').expect(503);

    expect(lines).toEqual([expect.objectContaining({ level: 40, requestId: 'refused-1' })]);
  });
});
