import { createHash, randomBytes } from 'node:crypto';
import session, { type Session, type SessionData, type Store } from 'express-session';
import type { Request, RequestHandler } from 'express';
import type { Config } from './config';

export interface User {
  name: string;
}

declare module 'express-session' {
  interface SessionData {
    user: User;
    /** when the user logged in (epoch ms): the absolute timeout counts from here */
    loginAt: number;
    /** when the cookie was last sent with a fresh expiry (epoch ms): also when the session was last seen */
    cookieRenewedAt: number;
    /** the session's public name in GET /sessions: random, so it tells nothing of the session ID */
    handle: string;
    /** where the login came from, as GET /sessions shows it */
    device: Device;
  }
}

/** the little kept of a login's client: browser and OS family and major version, the IP truncated */
export interface Device {
  browser: string;
  os: string;
  ip: string;
}

/** a stored session as a store sees it: once serialised, `cookie.expires` comes back as a string */
export type StoredSession = Pick<SessionData, 'cookie'> & Partial<Pick<SessionData, 'loginAt'>>;

export type TimeoutReason = 'idle_timeout' | 'absolute_timeout';

export interface ExpiryRule {
  /** when a session is gone for good (epoch ms) */
  (sess: StoredSession): number;
  /** which of the two timeouts ends it */
  reason(sess: StoredSession): TimeoutReason;
}

/**
 * The one rule for both timeouts: a session ends at its idle expiry (the cookie's expiry as last renewed: see
 * `renewSession`) or at login + the absolute timeout, whichever comes first. Both stores apply it when they load
 * a session (none past it is ever served, so express-session starts no session and sends no cookie in its place)
 * and when they write, prune or expire one.
 */
export function createExpiryRule(config: Pick<Config, 'absoluteTimeoutSeconds'>): ExpiryRule {
  const absoluteMs = config.absoluteTimeoutSeconds * 1000;
  const absoluteEnd = (sess: StoredSession) => (typeof sess.loginAt === 'number' ? sess.loginAt + absoluteMs : Number.POSITIVE_INFINITY);
  const idleEnd = (sess: StoredSession) => {
    const expires = sess.cookie?.expires;
    return expires ? new Date(expires).getTime() : Number.POSITIVE_INFINITY;
  };
  return Object.assign((sess: StoredSession) => Math.min(idleEnd(sess), absoluteEnd(sess)), {
    reason: (sess: StoredSession): TimeoutReason => (absoluteEnd(sess) <= idleEnd(sess) ? 'absolute_timeout' : 'idle_timeout'),
  });
}

const TAG_LENGTH = 22;

/**
 * A user's tag: 132 bits of the SHA-256 of the name, in base64url. It names the user's keys in Redis and starts the
 * ID of every session a login makes for them, so a store that loads a session by its ID knows whose stamps to read
 * in the same round trip (see stores/redis-index.ts). It is no secret: the session's holder can read the name itself.
 */
export function userTag(name: string): string {
  return createHash('sha256').update(name).digest('base64url').slice(0, TAG_LENGTH);
}

/** the user tag a session ID starts with; undefined for an ID made before a login */
export function tagOf(sid: string): string | undefined {
  return sid.length === TAG_LENGTH + 32 ? sid.slice(0, TAG_LENGTH) : undefined;
}

// the name a login is making a session for, until its new ID is drawn
const loggingIn = new WeakMap<Request, string>();

/** the next session ID drawn for this request (a login's regenerate) belongs to `name` */
export function sessionFor(req: Request, name: string): void {
  loggingIn.set(req, name);
}

// 192 random bits, as express-session draws them, after the user's tag when a login draws it
function generateSessionId(req: Request): string {
  const name = loggingIn.get(req);
  return (name === undefined ? '' : userTag(name)) + randomBytes(24).toString('base64url');
}

/** express-session as the contract asks: a named cookie, no anonymous sessions, expiry renewed on use. */
export function createSessionMiddleware(config: Readonly<Config>, store: Store): RequestHandler {
  return session({
    name: config.cookieName,
    genid: generateSessionId,
    secret: config.secrets,
    store,
    resave: false,
    saveUninitialized: false,
    // the cookie is sent again when the session changes: `renewSession` makes that happen as the user is active
    rolling: false,
    cookie: {
      httpOnly: true,
      sameSite: 'lax',
      path: '/',
      secure: config.cookieSecure,
      maxAge: config.idleTimeoutSeconds * 1000,
    },
  });
}

// the session's expiry is pushed forward at most this often
const MAX_RENEWAL_INTERVAL_MS = 60_000;

/**
 * Renews the session, once a tenth of the idle window (at most a minute) has passed since its last renewal,
 * instead of on every request: the session is saved with a fresh expiry and the cookie is sent again with it.
 * The idle timeout counts from the last renewal, on the server as in the browser and on both stores alike: a
 * session may end up to one interval early, never late. The stores' `touch` writes nothing, so a request between
 * two renewals is a read (on Redis, one GET and no EXPIRE); signing and sending a cookie on every response cost
 * about 9 % of a request.
 */
export function renewSession(config: Pick<Config, 'idleTimeoutSeconds'>): RequestHandler {
  const intervalMs = Math.min((config.idleTimeoutSeconds * 1000) / 10, MAX_RENEWAL_INTERVAL_MS);
  return (req, _res, next) => {
    const now = Date.now();
    if (req.session.user !== undefined && now - (req.session.cookieRenewedAt ?? 0) >= intervalMs) {
      // a change to the session: express-session saves it and sends the cookie with a new expiry
      req.session.cookieRenewedAt = now;
    }
    next();
  };
}

// the sessions express-session loaded from a store: it builds those, and only those, with Store#createSession
const loadedSessions = new WeakSet<object>();

/** marks a session as loaded from the store; stores call it from `createSession` */
export function markLoaded<T extends object>(sess: T): T {
  loadedSessions.add(sess);
  return sess;
}

/**
 * Whether `sess` was loaded from the store, as opposed to made in this request (a first visit, a login's
 * regenerate). A save of a loaded session may only update it: stores write it only over a session they still
 * hold, so a request that loaded it before a logout cannot bring it back afterwards, whatever it changed.
 */
export function wasLoaded(sess: object): boolean {
  return loadedSessions.has(sess);
}

/** express-session's callback methods as promises: the one helper every caller uses */
export function settle(sess: Session, method: 'regenerate' | 'save' | 'destroy'): Promise<void> {
  return new Promise((resolve, reject) => {
    sess[method]((err: unknown) => (err ? reject(err) : resolve()));
  });
}

/**
 * Saves a session a login has just regenerated, now, so a store that cannot take it gets its error answer; and
 * makes express-session's own save at the end of the request a no-op: it compares with the ID the request came
 * with, cannot tell that the regenerated session was saved, and would write it (and index it) a second time.
 */
export async function saveLogin(sess: Session): Promise<void> {
  await settle(sess, 'save');
  Object.defineProperty(sess, 'save', {
    configurable: true,
    enumerable: false,
    writable: true,
    value: (callback?: (err?: unknown) => void) => {
      callback?.();
      return sess;
    },
  });
}

const PROBE_ID = 'healthz-probe';

/** a real round trip to the store, through the same `get` that loads sessions */
export function probeStore(store: Store): Promise<void> {
  return new Promise((resolve, reject) => {
    store.get(PROBE_ID, (err: unknown) => (err ? reject(err) : resolve()));
  });
}
