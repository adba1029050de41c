// What the stores offer the rest of the app: below both the factory and each store, so nothing imports in a circle.
import type { Store as RateLimitStore } from 'express-rate-limit';
import type { RedisClientType } from 'redis';
import type { SessionData, Store } from 'express-session';
import { UNKNOWN } from '../device';
import type { Device } from '../session';

/** why a session ended, in the audit log's words */
export type EndReason = 'logout' | 'revoked' | 'revoked_by_admin' | 'evicted' | 'idle_timeout' | 'absolute_timeout';

/** one session in its user's index: what GET /sessions shows, and the session ID, which never leaves the server */
export interface ActiveSession extends Device {
  handle: string;
  sid: string;
  createdAt: number;
  lastSeenAt: number;
  expiresAt: number;
}

/** a session's start or end, for the audit log */
export interface SessionEvent {
  event: 'session_created' | 'session_ended';
  reason?: EndReason;
  sid: string;
  user: string;
  ip: string;
  browser: string;
}

export type Audit = (event: SessionEvent) => void;

/**
 * The per-user index both stores keep beside their sessions, with one behaviour (test/active-sessions.test.ts runs
 * the same suite against each). A session is indexed when a login saves it, kept up to date by its renewals, and
 * leaves the index however it ends; ended sessions are gone from the store at once, and a request that loaded one
 * before cannot write it back.
 */
export interface SessionIndex {
  /** the user's live sessions, most recently seen first */
  listSessions(user: string): Promise<ActiveSession[]>;
  /** ends one of the user's sessions by its handle; false when the user has no such live session */
  endSession(user: string, handle: string, reason: EndReason): Promise<boolean>;
  /** ends every session of the user but `except` (a handle); how many live ones ended */
  endUserSessions(user: string, options: { except?: string; reason: EndReason }): Promise<number>;
  /** ends every session of every user; how many, when the store knows without a scan of everything, else null */
  endAllSessions(): Promise<number | null>;
}

export type IndexedStore = Store & SessionIndex;

export interface SessionStore {
  /** what express-session is given, with the per-user index */
  store: IndexedStore;
  /** resolves once the store can serve sessions; rejects, naming the store, when it cannot */
  ready(): Promise<void>;
  /** where the login limit counts, when it must be shared between instances (after ready()); else in memory */
  rateLimitStore?(): RateLimitStore;
  /** lets go of timers and connections */
  close(): Promise<void>;
}

/** a session a login made: it belongs to `user.name` and goes in that user's index */
export type OwnedSession = SessionData & Required<Pick<SessionData, 'user' | 'handle' | 'device' | 'loginAt'>>;

export function isOwned(sess: Partial<SessionData>): sess is OwnedSession {
  return sess.user !== undefined && typeof sess.handle === 'string' && sess.device !== undefined && typeof sess.loginAt === 'number';
}

/** a session a login made, indexed or not (one from before sessions were indexed has no handle or device) */
export type UserSession = SessionData & Required<Pick<SessionData, 'user' | 'loginAt'>>;

export function hasUser(sess: Partial<SessionData>): sess is UserSession {
  return sess.user !== undefined && typeof sess.loginAt === 'number';
}

/** a session as its user's index shows it */
export function activeSession(sid: string, sess: UserSession, expiresAt: number): ActiveSession {
  return {
    handle: sess.handle ?? '',
    sid,
    createdAt: sess.loginAt,
    lastSeenAt: sess.cookieRenewedAt ?? sess.loginAt,
    expiresAt,
    browser: sess.device?.browser ?? UNKNOWN,
    os: sess.device?.os ?? UNKNOWN,
    ip: sess.device?.ip ?? UNKNOWN,
  };
}

/** the audit event for a session that starts or ends */
export function sessionEvent(event: SessionEvent['event'], user: string, session: ActiveSession, reason?: EndReason): SessionEvent {
  return { event, reason, sid: session.sid, user, ip: session.ip, browser: session.browser };
}

/** most recently seen first */
export const byLastSeen = (a: ActiveSession, b: ActiveSession): number => b.lastSeenAt - a.lastSeenAt;

/** a Redis client as the store makes it: RESP2 replies (strings and arrays, as the scripts and parsers expect) */
// eslint-disable-next-line @typescript-eslint/no-empty-object-type -- redis's own defaults: no modules, functions, scripts or type mapping
export type RedisClient = RedisClientType<{}, {}, {}, 2, {}>;

/** a MULTI of the login counter's commands, all on one key (so one cluster slot) */
export interface RedisTransaction {
  get(key: string): RedisTransaction;
  pTTL(key: string): RedisTransaction;
  incr(key: string): RedisTransaction;
  decr(key: string): RedisTransaction;
  set(key: string, value: string, options: { expiration: { type: 'PX'; value: number }; condition: 'NX' }): RedisTransaction;
  exec(): Promise<unknown[]>;
}

/**
 * The commands the Redis store sends, which a client, a Sentinel client and a Cluster client all offer with these
 * signatures (the compiler checks each against it). On a cluster, the keys of one MGET, script or MULTI must share a slot.
 */
export type RedisCommands = Pick<RedisClient, 'get' | 'set' | 'getDel' | 'del' | 'exists' | 'evalSha' | 'eval' | 'mGet' | 'pExpire'> & {
  multi(): RedisTransaction;
};
