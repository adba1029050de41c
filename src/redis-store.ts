import { RedisStore } from 'connect-redis';
import type { SessionData } from 'express-session';
import type { Logger } from 'pino';
import { RedisStore as RedisRateLimitStore, type RedisReply } from 'rate-limit-redis';
import { createClient, ErrorReply } from 'redis';
import { maskUrlPassword, type Config } from './config';
import { StoreUnavailableError } from './errors';
import { isRenewal, type ExpiryRule } from './session';
import type { SessionStore } from './store';

// a store operation that has not answered by then fails, so a stalled Redis gives a 503 well within 5 s
const COMMAND_TIMEOUT_MS = 2000;
// start-up waits this long for Redis (it may be starting beside us), then gives up well within 15 s
const STARTUP_TIMEOUT_MS = 10_000;
const MAX_RECONNECT_DELAY_MS = 2000;

type Callback = (err?: unknown, data?: SessionData | null) => unknown;

/**
 * A Redis reply within the deadline; a connection that fails or stalls becomes the 503 the client is owed (the
 * cause is kept for the log), while Redis's own error replies (NOSCRIPT, say) pass through for the caller.
 * Written here because node-redis's own command timeout stops counting once a command is written, so a Redis
 * that stalls with the connection open would hang requests for good.
 */
function withDeadline<T>(promise: Promise<T>): Promise<T> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(
      () => reject(new StoreUnavailableError(new Error(`Redis did not answer within ${COMMAND_TIMEOUT_MS} ms`))),
      COMMAND_TIMEOUT_MS,
    );
    promise.then(
      (value) => {
        clearTimeout(timer);
        resolve(value);
      },
      (err: unknown) => {
        clearTimeout(timer);
        reject(err instanceof ErrorReply ? err : new StoreUnavailableError(err));
      },
    );
  });
}

/** a store operation, within the deadline, answered through express-session's callback */
function answer(callback: Callback | undefined, operation: Promise<unknown>): Promise<void> {
  return withDeadline(operation).then(
    (data) => void callback?.(null, (data ?? null) as SessionData | null),
    (err: unknown) => void callback?.(err),
  );
}

type RedisClient = ReturnType<typeof createClient>;

class GuardedRedisStore extends RedisStore {
  constructor(
    private readonly redis: RedisClient,
    private readonly ttlSeconds: (sess: SessionData) => number,
  ) {
    super({ client: redis, ttl: ttlSeconds });
  }

  // without a callback, connect-redis's methods resolve with their result or reject with the Redis error
  override get(sid: string, callback?: Callback) {
    return answer(callback, super.get(sid));
  }

  override set(sid: string, sess: SessionData, callback?: Callback) {
    return answer(callback, isRenewal(sess) ? this.renew(sid, sess) : super.set(sid, sess));
  }

  // SET XX writes only a key that still exists: a renewal racing a logout cannot recreate the session
  private async renew(sid: string, sess: SessionData): Promise<void> {
    const ttl = this.ttlSeconds(sess);
    if (ttl <= 0) {
      await this.redis.del(this.prefix + sid);
      return;
    }
    await this.redis.set(this.prefix + sid, this.serializer.stringify(sess), {
      expiration: { type: 'EX', value: ttl },
      condition: 'XX',
    });
  }

  // EXPIRE on a missing key does nothing, so a touch racing a logout cannot bring the session back
  override touch(sid: string, sess: SessionData, callback?: Callback) {
    return answer(callback, super.touch(sid, sess));
  }

  override destroy(sid: string, callback?: Callback) {
    return answer(callback, super.destroy(sid));
  }
}

/**
 * Sessions in Redis through connect-redis, shared by every instance. While Redis is away, commands fail at
 * once instead of queueing (no request hangs), and the client reconnects by itself.
 */
export function createRedisSessionStore(config: Readonly<Config>, expiresAt: ExpiryRule, logger: Logger): SessionStore {
  const where = maskUrlPassword(config.redisUrl);
  const client = createClient({
    url: config.redisUrl,
    disableOfflineQueue: true,
    // while Redis stalls, commands wait for their deadline; past this many, they fail at once instead
    commandsQueueMaxLength: 10_000,
    socket: {
      connectTimeout: COMMAND_TIMEOUT_MS,
      reconnectStrategy: (retries) => Math.min(100 * 2 ** retries, MAX_RECONNECT_DELAY_MS),
    },
  });
  let lastError: unknown;
  client.on('error', (err: unknown) => {
    lastError = err;
    logger.warn({ err, redis: where }, 'redis connection error');
  });

  // Redis drops a session when either timeout ends it, so nothing outlives its rule in memory
  const store = new GuardedRedisStore(client, (sess) => Math.ceil((expiresAt(sess) - Date.now()) / 1000));

  return {
    store,
    async ready() {
      let timer: NodeJS.Timeout | undefined;
      const timedOut = new Promise<never>((_resolve, reject) => {
        timer = setTimeout(() => reject(new Error('timed out')), STARTUP_TIMEOUT_MS);
      });
      try {
        await Promise.race([client.connect(), timedOut]);
      } catch (err) {
        client.destroy();
        // the socket's last error says more ("ECONNREFUSED") than the timeout that ended the wait
        const seen = lastError ?? err;
        const reason = seen instanceof Error ? seen.message : String(seen);
        throw new Error(`Cannot reach Redis at ${where} (SESSION_STORE=redis): ${reason}`, { cause: err });
      } finally {
        clearTimeout(timer);
      }
    },
    // the login limit counted in Redis as well, so all instances share one budget per client
    rateLimitStore: () =>
      new RedisRateLimitStore({
        prefix: 'rl:login:',
        sendCommand: (...command: string[]) => withDeadline(client.sendCommand<RedisReply>(command)),
      }),
    async close() {
      // a clean QUIT when Redis is there; otherwise stop reconnecting at once
      if (client.isReady) await client.close();
      else if (client.isOpen) client.destroy();
    },
  };
}
