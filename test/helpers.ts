import { createHmac } from 'node:crypto';
import { once } from 'node:events';
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Express, Request } from 'express';
import { Store, type Session, type SessionData } from 'express-session';
import path from 'node:path';
import { Writable } from 'node:stream';
import newman, { type NewmanRunSummary } from 'newman';
import type { Logger } from 'pino';
import request, { type Response } from 'supertest';
import { createApp } from '../src/app';
import { createHttpServer, type TimeoutOptions } from '../src/http-server';
import { loadConfig, type Config, type Env, type LogLevel } from '../src/config';
import { createLogger } from '../src/logger';
import { StoreUnavailableError } from '../src/errors';
import type { BoundedMemoryStore } from '../src/stores/memory';
import type { ActiveSession, SessionIndex } from '../src/stores/types';
import { createMemoryStore } from '../src/stores';
import { installed, ROOT, sleep, spawnNode, type Run } from './processes';

export { ClusterTopology, freePort, installed, listening, listeningSockets, rawConnection, redisCli, RedisServer, SentinelTopology, sleep, until, type Run } from './processes';

/** configuration as the server would read it, quiet and unthrottled unless a test says otherwise */
export function testConfig(env: Env = {}): Readonly<Config> {
  return loadConfig({ LOG_LEVEL: 'silent', LOG_FORMAT: 'json', LOGIN_RATE_LIMIT_PER_MINUTE: '0', ...env });
}


export interface TestApp {
  app: Express;
  config: Readonly<Config>;
  store: BoundedMemoryStore;
}

const stores: BoundedMemoryStore[] = [];
afterAll(() => stores.forEach((store) => store.close()));

/** the app on a bounded memory store, both built as the server builds them */
export function makeApp(env: Env = {}): TestApp {
  const config = testConfig(env);
  const store = createMemoryStore(config);
  stores.push(store);
  return { app: createApp({ config, store }), config, store };
}

/** a test's own Store, for faults: its index answers as an unreachable store does unless `indexError` says otherwise */
export abstract class TestStore extends Store implements SessionIndex {
  protected indexError(): Error {
    return new StoreUnavailableError(new Error('Redis did not answer within 2000 ms'));
  }
  async listSessions(): Promise<ActiveSession[]> {
    throw this.indexError();
  }
  async endSession(): Promise<boolean> {
    throw this.indexError();
  }
  async endUserSessions(): Promise<number> {
    throw this.indexError();
  }
  async endAllSessions(): Promise<number> {
    throw this.indexError();
  }
}

/** a logger whose JSON lines are kept, parsed, in `lines` */
export function capturedLogger(level = 'info'): { logger: Logger; lines: Record<string, unknown>[]; raw: string[] } {
  const lines: Record<string, unknown>[] = [];
  const raw: string[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _encoding, done) {
      raw.push(chunk.toString());
      lines.push(JSON.parse(chunk.toString()) as Record<string, unknown>);
      done();
    },
  });
  return { logger: createLogger({ logLevel: level as LogLevel }, sink), lines, raw };
}

/** how many sessions a memory store holds (its callbacks run synchronously) */
export function storedCount(store: BoundedMemoryStore): number {
  let count = -1;
  store.length((_err, n) => (count = n ?? -1));
  return count;
}

/** the session a memory store holds under `sid`: null when it holds none */
export function storedSession(store: BoundedMemoryStore, sid: string): SessionData | null | undefined {
  let sess: SessionData | null | undefined;
  store.get(sid, (_err, found) => (sess = found));
  return sess;
}

/**
 * The session under `sid` as express-session builds it for a request that loads it (through the store's
 * `createSession`): what a request holds between loading a session and saving it at its end.
 */
export async function loadSession(store: Store, sid: string): Promise<Session & SessionData> {
  const data = await new Promise<SessionData>((resolve, reject) =>
    store.get(sid, (err, sess) => (err ? reject(err) : sess ? resolve(sess) : reject(new Error(`the store holds no session ${sid}`)))),
  );
  return store.createSession({ sessionID: sid, sessionStore: store } as unknown as Request, data);
}

/** store.set as a promise */
export function saveSession(store: Store, sid: string, sess: SessionData): Promise<void> {
  return new Promise((resolve, reject) => store.set(sid, sess, (err?: unknown) => (err ? reject(err) : resolve())));
}

/** store.destroy as a promise */
export function destroySession(store: Store, sid: string): Promise<void> {
  return new Promise((resolve, reject) => store.destroy(sid, (err?: unknown) => (err ? reject(err) : resolve())));
}

export interface Cookie {
  name: string;
  value: string;
  /** attribute names lower-cased; flags map to true */
  attributes: Record<string, string | true>;
}

export function setCookies(res: Response): Cookie[] {
  const header = res.headers['set-cookie'] as unknown as string[] | undefined;
  return (header ?? []).map((line) => {
    const [pair = '', ...attributes] = line.split(';').map((part) => part.trim());
    const eq = pair.indexOf('=');
    return {
      name: pair.slice(0, eq),
      value: pair.slice(eq + 1),
      attributes: Object.fromEntries(
        attributes.map((attribute) => {
          const at = attribute.indexOf('=');
          return at === -1 ? [attribute.toLowerCase(), true] : [attribute.slice(0, at).toLowerCase(), attribute.slice(at + 1)];
        }),
      ),
    };
  });
}

/** the Set-Cookie for `name`, failing the test when there is none */
export function shouldSetCookie(res: Response, name = 'sid'): Cookie {
  const cookie = setCookies(res).find((c) => c.name === name);
  if (!cookie) throw new Error(`expected a Set-Cookie for ${name}, got ${JSON.stringify(res.headers['set-cookie'] ?? null)}`);
  return cookie;
}

export function shouldNotSetCookie(res: Response): void {
  expect(res.headers['set-cookie']).toBeUndefined();
}

/** the session ID inside a signed cookie value ("s:<id>.<signature>") */
export function sessionId(cookie: Cookie): string {
  const value = decodeURIComponent(cookie.value);
  const match = /^s:([^.]+)\./.exec(value);
  if (!match?.[1]) throw new Error(`not a signed session cookie: ${cookie.value}`);
  return match[1];
}

/** a session cookie for `id`, signed with `secret` as express-session signs it: what a planted cookie looks like */
export function signedCookieHeader(id: string, secret: string, name = 'sid'): string {
  const signature = createHmac('sha256', secret).update(id).digest('base64').replace(/=+$/, '');
  return `${name}=${encodeURIComponent(`s:${id}.${signature}`)}`;
}

export function cookieHeader(cookie: Cookie): string {
  return `${cookie.name}=${cookie.value}`;
}

/** the app on a real socket on a free port, served as the server serves it; close() stops it */
export async function listen(app: Express, timeouts: TimeoutOptions = {}): Promise<{ url: string; port: number; server: Server; close(): Promise<void> }> {
  const server = createHttpServer(app, timeouts).listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    port,
    server,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}

/**
 * `describe` when every one of `programs` is installed; otherwise the block is skipped with a visible message, and in CI
 * (CI=true) it fails instead, so a missing install step can never pass for green.
 */
export function describeWith(programs: string | string[], name: string, body: () => void): void {
  const missing = [programs].flat().filter((program) => !installed(program));
  if (missing.length === 0) {
    describe(name, body);
    return;
  }
  const what = missing.join(' and ');
  if (process.env.CI === 'true') {
    describe(name, () => {
      it(`needs ${what}`, () => {
        throw new Error(`${what} not installed, and CI=true: install it (.ci/run does)`);
      });
    });
    return;
  }
  console.warn(`SKIPPED "${name}": ${what} not installed`);
  describe.skip(name, body);
}

/**
 * Logs in, then fires reads of that session around a logout, all at once: returns the cookie. Afterwards the
 * session must stay logged out, whatever order the store saw the reads' touches and the logout's delete in.
 */
export async function logoutRacingReads(app: Express, { reads = 30, waitMs = 0 } = {}): Promise<string> {
  const cookie = cookieHeader(shouldSetCookie(await request(app).post('/login?name=racer').expect(201)));
  // waiting past the renewal interval makes the reads renewals, which write the session back
  if (waitMs > 0) await sleep(waitMs);
  const read = () => request(app).get('/user').set('Cookie', cookie);
  const before = Array.from({ length: reads }, read);
  const logout = request(app).post('/logout').set('Cookie', cookie).expect(204);
  const after = Array.from({ length: reads }, read);
  await Promise.all([...before, logout, ...after]);
  return cookie;
}

const COLLECTION = path.join(ROOT, 'postman', 'session-management.postman_collection.json');

/** runs the collection with newman against `baseUrl`; resolves with the run's summary */
export function runCollection(baseUrl: string): Promise<NewmanRunSummary> {
  return new Promise((resolve, reject) => {
    newman.run(
      { collection: COLLECTION, envVar: [{ key: 'baseUrl', value: baseUrl }], reporters: [], timeoutRequest: 5000 },
      (err, summary) => (err ? reject(err) : resolve(summary)),
    );
  });
}

/** the real entry point, as `npm start` runs it (without the watcher), in a process of its own */
export function startServer(env: Record<string, string>, nodeArgs: string[] = []): Run {
  return spawnNode([...nodeArgs, '-r', 'ts-node/register/transpile-only', path.join(ROOT, 'src', 'server.ts')], {
    LOG_LEVEL: 'silent',
    LOG_FORMAT: 'json',
    LOGIN_RATE_LIMIT_PER_MINUTE: '0',
    ...env,
  });
}
