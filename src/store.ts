import type { Store as RateLimitStore } from 'express-rate-limit';
import type { Store } from 'express-session';
import type { Logger } from 'pino';
import type { Config } from './config';
import { BoundedMemoryStore } from './memory-store';
import { createExpiryRule } from './session';

export interface SessionStore {
  /** what express-session is given */
  store: Store;
  /** resolves once the store can serve sessions; rejects, naming the store, when it cannot */
  ready(): Promise<void>;
  /** where the login limit counts, when it must be shared between instances (after ready()); else in memory */
  rateLimitStore?(): RateLimitStore;
  /** lets go of timers and connections */
  close(): Promise<void>;
}

// sweep often enough that a full store frees up soon, but no more than once a minute
const MAX_PRUNE_INTERVAL_MS = 60_000;

/**
 * The session store named by SESSION_STORE: `memory` (bounded, one process) or `redis` (shared by every
 * instance; its packages are loaded only when chosen).
 */
export async function createSessionStore(config: Readonly<Config>, logger: Logger): Promise<SessionStore> {
  if (config.sessionStore === 'redis') {
    const { createRedisSessionStore } = await import('./redis-store');
    return createRedisSessionStore(config, createExpiryRule(config), logger);
  }
  const store = createMemoryStore(config);
  return {
    store,
    ready: async () => {},
    close: async () => store.close(),
  };
}

/** the bounded memory store as SESSION_MEMORY_MAX and the timeouts configure it */
export function createMemoryStore(
  config: Pick<Config, 'sessionMemoryMax' | 'idleTimeoutSeconds' | 'absoluteTimeoutSeconds'>,
): BoundedMemoryStore {
  return new BoundedMemoryStore({
    max: config.sessionMemoryMax,
    expiresAt: createExpiryRule(config),
    pruneIntervalMs: Math.min(config.idleTimeoutSeconds * 1000, MAX_PRUNE_INTERVAL_MS),
  });
}
