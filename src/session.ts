import session, { type Session, type SessionData, type Store } from 'express-session';
import type { RequestHandler } from 'express';
import type { Config } from './config';

export interface User {
  name: string;
}

declare module 'express-session' {
  interface SessionData {
    user: User;
    /** when the user logged in (epoch ms): the absolute timeout counts from here */
    loginAt: number;
    /** when the cookie was last sent with a fresh expiry (epoch ms) */
    cookieRenewedAt: number;
  }
}

/** a stored session as a store sees it: once serialised, `cookie.expires` comes back as a string */
export type StoredSession = Pick<SessionData, 'cookie'> & Partial<Pick<SessionData, 'loginAt'>>;

/** when a session is gone for good (epoch ms) */
export type ExpiryRule = (sess: StoredSession) => number;

/**
 * The one rule for both timeouts: a session ends at its idle expiry (the cookie's expiry, pushed forward on
 * every use) or at login + the absolute timeout, whichever comes first. Stores use it to drop and prune
 * sessions; `enforceTimeouts` uses it on every request.
 */
export function createExpiryRule(config: Pick<Config, 'absoluteTimeoutSeconds'>): ExpiryRule {
  const absoluteMs = config.absoluteTimeoutSeconds * 1000;
  return (sess) => {
    const expires = sess.cookie?.expires;
    const idleEnd = expires ? new Date(expires).getTime() : Number.POSITIVE_INFINITY;
    const absoluteEnd = typeof sess.loginAt === 'number' ? sess.loginAt + absoluteMs : Number.POSITIVE_INFINITY;
    return Math.min(idleEnd, absoluteEnd);
  };
}

/** express-session configured from SPEC.md: named cookie, no anonymous sessions, expiry renewed on use. */
export function createSessionMiddleware(config: Readonly<Config>, store: Store): RequestHandler {
  return session({
    name: config.cookieName,
    secret: config.secrets,
    store,
    resave: false,
    saveUninitialized: false,
    // the cookie is sent again when the session changes: `renewCookie` makes that happen as the user is active
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

/** drops a loaded session past either timeout, whatever the store's own expiry granularity */
export function enforceTimeouts(expiresAt: ExpiryRule): RequestHandler {
  return (req, _res, next) => {
    if (req.session.user === undefined || expiresAt(req.session) > Date.now()) {
      next();
      return;
    }
    // regenerate, not destroy: the old one leaves the store and the request goes on with an empty session
    settle(req.session, 'regenerate').then(() => next(), next);
  };
}

// the cookie's expiry is pushed forward at most this often; the store's expiry moves on every request
const MAX_RENEWAL_INTERVAL_MS = 60_000;

/**
 * Sends the cookie again, with a fresh expiry, once a tenth of the idle window (at most a minute) has passed
 * since it was last sent, instead of on every response: signing and sending a cookie on every response cost
 * about 9 % of a request. The store's own expiry is renewed on every request (express-session touches it), so
 * the server-side idle timeout stays exact; the browser may drop an idle user's cookie up to one interval
 * early, never late.
 */
export function renewCookie(config: Pick<Config, 'idleTimeoutSeconds'>): RequestHandler {
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

/**
 * Whether a save only renews a session that already exists (anything after the login that created it). Stores
 * write a renewal only over a session they still hold, so a renewal racing a logout cannot bring it back.
 */
export function isRenewal(sess: Partial<Pick<SessionData, 'loginAt' | 'cookieRenewedAt'>>): boolean {
  return sess.cookieRenewedAt !== sess.loginAt;
}

/** express-session's callback methods as promises: the one helper every caller uses */
export function settle(sess: Session, method: 'regenerate' | 'save' | 'destroy'): Promise<void> {
  return new Promise((resolve, reject) => {
    sess[method]((err: unknown) => (err ? reject(err) : resolve()));
  });
}

const PROBE_ID = 'healthz-probe';

/** a real round trip to the store, through the same `get` that loads sessions */
export function probeStore(store: Store): Promise<void> {
  return new Promise((resolve, reject) => {
    store.get(PROBE_ID, (err: unknown) => (err ? reject(err) : resolve()));
  });
}
