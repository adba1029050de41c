import { RedisStore } from 'connect-redis';
import type { Request } from 'express';
import type { Options as RateLimitOptions, Store as RateLimitStore } from 'express-rate-limit';
import type { SessionData } from 'express-session';
import type { Logger } from 'pino';
import type { Config } from '../config';
import { StoreUnavailableError } from '../errors';
import { markLoaded, tagOf, userTag, wasLoaded, type ExpiryRule } from '../session';
import { endedBy, RedisSessionIndex, sessionKeys } from './redis-index';
import { COMMAND_TIMEOUT_MS, connectRedis, type RedisConnection } from './redis-topology';
import { activeSession, hasUser, isOwned, type ActiveSession, type Audit, type EndReason, type RedisCommands, type SessionIndex, type SessionStore } from './types';

type Callback = (err?: unknown, data?: SessionData | null) => unknown;

/**
 * A Redis reply within the deadline. Anything else becomes the 503 the client is owed, the cause kept for the
 * log: a connection that fails or stalls, and every error reply too (OOM, READONLY, LOADING, BUSY, CLUSTERDOWN,
 * TRYAGAIN...: each says Redis cannot serve this now, none is the client's fault). Written here because
 * node-redis's own command timeout stops counting once a command is written, so a Redis that stalls with the
 * connection open would hang requests for good.
 */
function withDeadline<T>(promise: Promise<T>, operation?: Operation): Promise<T> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      if (operation) operation.answered = true;
      reject(new StoreUnavailableError(new Error(`Redis did not answer within ${COMMAND_TIMEOUT_MS} ms`)));
    }, COMMAND_TIMEOUT_MS);
    promise.then(
      (value) => {
        clearTimeout(timer);
        resolve(value);
      },
      (err: unknown) => {
        clearTimeout(timer);
        reject(new StoreUnavailableError(err));
      },
    );
  });
}

/**
 * A store operation whose caller may have been answered already: a deadline stops the waiting, not the commands,
 * which a Redis that stalled (or the Sentinel client, which holds commands through a failover) runs later
 */
interface Operation {
  answered: boolean;
}

/** a store operation, within the deadline, answered through express-session's callback */
function answer(callback: Callback | undefined, operation: Promise<unknown>, state?: Operation): Promise<void> {
  return withDeadline(operation, state).then(
    (data) => void callback?.(null, (data ?? null) as SessionData | null),
    (err: unknown) => void callback?.(err),
  );
}

// whole seconds until the rule ends a session, rounded up: Redis drops it then, so nothing outlives its rule in memory
const secondsLeft = (expiresAt: ExpiryRule, sess: SessionData): number => Math.ceil((expiresAt(sess) - Date.now()) / 1000);

class GuardedRedisStore extends RedisStore implements SessionIndex {
  private readonly index: RedisSessionIndex;
  private readonly redis: RedisCommands;
  private readonly key: (sid: string) => string;

  constructor(
    connection: Pick<RedisConnection, 'commands' | 'sharded'>,
    private readonly expiresAt: ExpiryRule,
    options: { absoluteTimeoutSeconds: number; maxPerUser: number; audit?: Audit },
  ) {
    super({ client: connection.commands, ttl: (sess: SessionData) => secondsLeft(expiresAt, sess) });
    this.redis = connection.commands;
    this.key = sessionKeys(this.prefix, connection.sharded);
    this.index = new RedisSessionIndex(this.redis, connection.sharded, this.key, { ...options, expiresAt });
  }

  // without a callback, connect-redis's methods resolve with their result or reject with the Redis error
  override get(sid: string, callback?: Callback) {
    return answer(callback, this.loadLive(sid));
  }

  // A TTL is whole seconds, rounded up: a session Redis still holds for a moment past its end is not served (as
  // the memory store serves none), so express-session starts no session in its place and sends no cookie. Nor is
  // one its user or an operator has ended: the stamps end what the index may have missed. A login's session ID
  // starts with its user's tag, so the stamps are read with the session, in the same round trip
  private async loadLive(sid: string): Promise<SessionData | null> {
    const { raw, stamps: early } = await this.index.load(sid);
    if (!raw) return null;
    const sess = (await this.serializer.parse(raw)) as SessionData;
    const tag = tagOf(sid);
    const expiresAt = this.expiresAt(sess);
    if (expiresAt <= Date.now()) return null;
    // a session from before sessions were indexed (no handle) is held to the stamps all the same
    if (!hasUser(sess)) return sess;
    const user = sess.user.name;
    const stamps = early && tag === userTag(user) ? early : await this.index.stamps(userTag(user));
    const reason = endedBy(stamps, sess);
    if (reason === undefined) return sess;
    await this.index.revokeLoaded(user, activeSession(sid, sess, expiresAt), reason);
    return null;
  }

  override set(sid: string, sess: SessionData, callback?: Callback) {
    if (wasLoaded(sess)) return answer(callback, this.update(sid, sess));
    const operation: Operation = { answered: false };
    return answer(callback, this.create(sid, sess, operation), operation);
  }

  // the session first, then its index entry: a crash between the two leaves a session the stamps still end. A
  // login answered 503 before its write went through is undone, not indexed: its client holds no cookie for it,
  // and it must not count against its user's limit (or push out a live session) nor be logged as started
  private async create(sid: string, sess: SessionData, operation: Operation): Promise<void> {
    const ttl = secondsLeft(this.expiresAt, sess);
    if (ttl <= 0) return;
    const [, globalStamp] = await Promise.all([
      this.redis.set(this.key(sid), this.serializer.stringify(sess), { expiration: { type: 'EX', value: ttl } }),
      this.index.globalStamp(),
    ]);
    if (operation.answered) {
      await this.redis.del(this.key(sid));
      return;
    }
    if (isOwned(sess)) await this.index.add(sess.user.name, activeSession(sid, sess, this.expiresAt(sess)), globalStamp);
  }

  // SET XX writes only a key that still exists, and the index entry is written only while it is there: a request
  // that loaded the session before it ended (a logout, a revocation, an eviction) cannot bring either back
  private async update(sid: string, sess: SessionData): Promise<void> {
    const ttl = secondsLeft(this.expiresAt, sess);
    if (ttl <= 0) {
      await this.redis.del(this.key(sid));
      return;
    }
    await Promise.all([
      this.redis.set(this.key(sid), this.serializer.stringify(sess), {
        expiration: { type: 'EX', value: ttl },
        condition: 'XX',
      }),
      isOwned(sess) ? this.index.update(sess.user.name, activeSession(sid, sess, this.expiresAt(sess))) : undefined,
    ]);
  }

  // the idle timeout counts from the last renewal, which is a save (see renewSession): a touch has nothing to write
  override async touch(_sid: string, _sess: SessionData, callback?: Callback) {
    callback?.(null);
  }

  override createSession(req: Request, sess: SessionData) {
    return markLoaded(super.createSession(req, sess));
  }

  // a session made in this request was never stored: a login draws its new ID without a delete first
  override regenerate(req: Request, callback: (err?: unknown) => void) {
    if (wasLoaded(req.session)) {
      super.regenerate(req, callback);
      return;
    }
    (this as unknown as { generate(req: Request): void }).generate(req);
    callback();
  }

  // a logout, or the old ID at a login: GETDEL tells whose session it was, so its index entry goes too
  override destroy(sid: string, callback?: Callback) {
    return answer(callback, this.end(sid));
  }

  private async end(sid: string): Promise<void> {
    const raw = await this.redis.getDel(this.key(sid));
    if (raw === null) return;
    const sess = (await this.serializer.parse(raw)) as SessionData;
    if (isOwned(sess)) await this.index.remove(sess.user.name, sess.handle, 'logout');
  }

  listSessions(user: string): Promise<ActiveSession[]> {
    return withDeadline(this.index.list(user));
  }

  endSession(user: string, handle: string, reason: EndReason): Promise<boolean> {
    return withDeadline(this.index.end(user, handle, reason));
  }

  endUserSessions(user: string, { except, reason }: { except?: string; reason: EndReason }): Promise<number> {
    return withDeadline(this.index.endUser(user, except, reason));
  }

  endAllSessions(): Promise<null> {
    return withDeadline(this.index.endAll());
  }
}

/**
 * Sessions in Redis through connect-redis, shared by every instance, on one Redis, behind Sentinel or on a Cluster
 * (see redis-topology.ts): the same keys, scripts, deadlines and 503 answers on each.
 */
export function createRedisSessionStore(config: Readonly<Config>, expiresAt: ExpiryRule, logger: Logger, audit?: Audit): SessionStore {
  const redis = connectRedis(config.redis, logger);
  const store = new GuardedRedisStore(redis, expiresAt, {
    absoluteTimeoutSeconds: config.absoluteTimeoutSeconds,
    maxPerUser: config.sessionMaxPerUser,
    audit,
  });
  return {
    store,
    ready: () => redis.connect(),
    // the login limit counted in Redis as well, so all instances share one budget per client
    rateLimitStore: () => new RedisLoginCounter(redis.commands),
    close: () => redis.close(),
  };
}

const COUNTER_PREFIX = 'rl:login:';
const PROBE_KEY = 'healthz-probe';

/**
 * The login limit's counts in Redis, for express-rate-limit: a fixed window per client, as rate-limit-redis
 * keeps it, counted by three commands in one MULTI (SET NX PX starts a window, INCR counts, PTTL tells when the
 * window ends). Hand-written because rate-limit-redis 6.0.1 keeps the promise of a failed SCRIPT LOAD for good:
 * one reload that failed (a flushed script cache after a restart or failover, a dropped connection, an ACL)
 * broke every later login until the process restarted. Without a script there is nothing to load or to lose.
 */
export class RedisLoginCounter implements RateLimitStore {
  readonly prefix = COUNTER_PREFIX;
  readonly localKeys = false;
  private windowMs = 60_000;

  constructor(private readonly redis: RedisCommands) {}

  init(options: RateLimitOptions): void {
    this.windowMs = options.windowMs;
  }

  async get(key: string) {
    const [hits, ttl] = await withDeadline(this.redis.multi().get(this.prefix + key).pTTL(this.prefix + key).exec());
    return hits === null ? undefined : { totalHits: Number(hits), resetTime: new Date(Date.now() + Number(ttl)) };
  }

  async increment(key: string) {
    const id = this.prefix + key;
    const [, hits, ttl] = await withDeadline(
      this.redis
        .multi()
        .set(id, '0', { expiration: { type: 'PX', value: this.windowMs }, condition: 'NX' })
        .incr(id)
        .pTTL(id)
        .exec(),
    );
    let windowLeft = Number(ttl);
    // a counter without an expiry would never reset (it expired between two commands on a Redis before 7.0,
    // which did not freeze time in a transaction): give it a window again
    if (windowLeft < 0) {
      await withDeadline(this.redis.pExpire(id, this.windowMs));
      windowLeft = this.windowMs;
    }
    return { totalHits: Number(hits), resetTime: new Date(Date.now() + windowLeft) };
  }

  async decrement(key: string): Promise<void> {
    const id = this.prefix + key;
    const [, ttl] = await withDeadline(this.redis.multi().decr(id).pTTL(id).exec());
    // the window had ended: DECR made a counter with no expiry, which counts nothing
    if (Number(ttl) === -1) await withDeadline(this.redis.del(id));
  }

  async resetKey(key: string): Promise<void> {
    await withDeadline(this.redis.del(this.prefix + key));
  }

  /** the commands a login's count takes, on a key of its own: fails exactly when logins cannot be counted */
  async probe(): Promise<void> {
    await this.increment(PROBE_KEY);
  }
}
