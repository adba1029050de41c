import type { Logger } from 'pino';
import type { Config } from '../config';
import { sessionAudit } from '../logger';
import type { Metrics } from '../metrics';
import { createExpiryRule } from '../session';
import { BoundedMemoryStore } from './memory';
import type { Audit, SessionStore } from './types';

// sweep often enough that a full store frees up soon, but no more than once a minute
const MAX_PRUNE_INTERVAL_MS = 60_000;
// one session's heap in the memory store, index included, rounded up from the largest measured (1540 to 1610 B
// from run to run: a name of 64 emoji, which makes the whole stored JSON two bytes a character, and a user of its own)
export const SESSION_HEAP_BYTES = 1700;
// the rest of the server's heap, with a login flood in flight
const SERVER_HEAP_BYTES = 64 * 2 ** 20;

/**
 * The session store named by SESSION_STORE: `memory` (bounded, one process) or `redis` (shared by every
 * instance; its packages are loaded only when chosen). With `metrics`, its operations are timed, its sessions'
 * ends counted and, for the memory store, its size watched.
 */
export async function createSessionStore(config: Readonly<Config>, logger: Logger, metrics?: Metrics): Promise<SessionStore> {
  const audit = bothAudits(sessionAudit(logger, config.secrets), metrics?.sessionEvents);
  let sessions: SessionStore;
  if (config.sessionStore === 'redis') {
    const { createRedisSessionStore } = await import('./redis');
    sessions = createRedisSessionStore(config, createExpiryRule(config), logger, audit);
  } else {
    const store = createMemoryStore(config, audit);
    metrics?.watchSize(store);
    sessions = { store, ready: async () => {}, close: async () => store.close() };
  }
  if (!metrics) return sessions;
  metrics.instrumentStore(sessions.store, config.sessionStore);
  const counter = sessions.rateLimitStore;
  if (counter) sessions.rateLimitStore = () => metrics.instrumentLoginCounter(counter(), config.sessionStore);
  return sessions;
}

// the audit log and the metrics both hear of every session's start and end
function bothAudits(log: Audit | undefined, count: Audit | undefined): Audit | undefined {
  if (!log || !count) return log ?? count;
  return (event) => {
    log(event);
    count(event);
  };
}

/** the bounded memory store as SESSION_MEMORY_MAX and the timeouts configure it */
export function createMemoryStore(
  config: Pick<Config, 'sessionMemoryMax' | 'idleTimeoutSeconds' | 'absoluteTimeoutSeconds' | 'sessionMaxPerUser'>,
  audit?: Audit,
): BoundedMemoryStore {
  return new BoundedMemoryStore({
    max: config.sessionMemoryMax,
    expiresAt: createExpiryRule(config),
    pruneIntervalMs: Math.min(config.idleTimeoutSeconds * 1000, MAX_PRUNE_INTERVAL_MS),
    maxPerUser: config.sessionMaxPerUser,
    audit,
  });
}

/**
 * A warning when a full memory store would not fit the heap this process may use (Node sizes it from the
 * machine's memory; `--max-old-space-size` sets it): better said at start-up than found out as a crash in a
 * login flood.
 */
export function heapWarning(
  config: Pick<Config, 'sessionStore' | 'sessionMemoryMax'>,
  heapLimitBytes: number,
): string | undefined {
  if (config.sessionStore !== 'memory') return undefined;
  const neededMb = Math.ceil((config.sessionMemoryMax * SESSION_HEAP_BYTES + SERVER_HEAP_BYTES) / 2 ** 20);
  const limitMb = Math.floor(heapLimitBytes / 2 ** 20);
  if (neededMb <= limitMb) return undefined;
  return (
    `SESSION_MEMORY_MAX=${config.sessionMemoryMax} sessions may need ${neededMb} MB of heap, more than this process's ` +
    `limit of ${limitMb} MB: lower SESSION_MEMORY_MAX or start node with --max-old-space-size=${neededMb}`
  );
}
