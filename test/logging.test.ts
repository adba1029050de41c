import type { SessionData } from 'express-session';
import request from 'supertest';
import { createApp } from '../src/app';
import type { Env } from '../src/config';
import { StoreUnavailableError } from '../src/errors';
import { createMemoryStore } from '../src/stores';
import { capturedLogger, testConfig, TestStore } from './helpers';

/** the app at LOG_LEVEL=info with its log kept; `store` in place of the memory store when given */
function loggedApp(env: Env = {}, store?: TestStore) {
  const config = testConfig({ LOG_LEVEL: 'info', ...env });
  const { logger, lines, raw } = capturedLogger('info');
  return { app: createApp({ config, store: store ?? createMemoryStore(config), logger }), lines, raw };
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
