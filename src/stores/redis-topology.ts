import type { Logger } from 'pino';
import { createClient, createCluster, createSentinel, type RedisClusterType } from 'redis';
import { describeNodes, maskUrlPassword, type RedisAuth, type RedisTopology } from '../config';
import { outsideRequests } from '../logger';
import type { RedisCommands } from './types';

// a store operation that has not answered by then fails, so a stalled Redis gives a 503 well within 5 s
export const COMMAND_TIMEOUT_MS = 2000;
// start-up waits this long for Redis (it may be starting beside us), then gives up well within 15 s
const STARTUP_TIMEOUT_MS = 10_000;
// a clean close waits for every command still queued; past this, the connections are dropped instead
const CLOSE_TIMEOUT_MS = 1000;
// a node that went away is tried again this often at most: soon after a failover, it is back as a replica
const MAX_RECONNECT_DELAY_MS = 1000;
// a cluster client reads the slot map again this long after a node's connection broke: time for a replica to take over
const CLUSTER_REFRESH_AFTER_MS = 1000;
// each primary of a cluster is asked for a PING this often; one that has not answered its last within the command
// deadline is taken for stalled (see watchStalledPrimaries)
const CLUSTER_WATCH_INTERVAL_MS = 1000;

/** One Redis deployment, whichever of the three it is, as the store uses it. */
export interface RedisConnection {
  /** the commands the store, its index and the login limit send; each topology routes them to its primaries */
  commands: RedisCommands;
  /** a cluster: keys in different slots cannot be read by one MGET */
  sharded: boolean;
  /** resolves once commands can be served; rejects within STARTUP_TIMEOUT_MS saying why not */
  connect(): Promise<void>;
  close(): Promise<void>;
}

// what every connection to a data node is given. While a node is away its commands fail at once instead of
// queueing (no request hangs: the Sentinel client alone holds commands across a failover, and the store's
// deadline bounds those), and it is tried again by itself
const nodeOptions = (auth?: RedisAuth) => ({
  ...(auth?.username === undefined ? {} : { username: auth.username }),
  ...(auth?.password === undefined ? {} : { password: auth.password }),
  disableOfflineQueue: true,
  // while Redis stalls, commands wait for their deadline; past this many, they fail at once instead
  commandsQueueMaxLength: 10_000,
  socket: {
    connectTimeout: COMMAND_TIMEOUT_MS,
    reconnectStrategy: (retries: number) => Math.min(100 * 2 ** retries, MAX_RECONNECT_DELAY_MS),
    ...(auth?.tls ? { tls: true as const } : {}),
  },
});

const commanderOptions = {
  // replies as strings and arrays: what the index's scripts answer and the parsers read (redis 6 defaults to RESP3)
  RESP: 2 as const,
  // no per-command timeout of the client's (redis 6 sets one of 5 s by default, an AbortSignal.timeout for each
  // command, which cost about a tenth of a GET /user): the store's own deadline gives every operation its 2 s
  commandOptions: { timeout: 0 },
};

interface Client {
  commands: RedisCommands;
  connect(): Promise<unknown>;
  /** after connect: anything that makes the deployment unfit to serve, in words; undefined when it is fit */
  unfit?(): Promise<string | undefined>;
  close(): Promise<unknown>;
  destroy(): unknown;
  /** what to stop at close (a cluster's watchdog) */
  stop?(): void;
  on(event: string, listener: (err: unknown) => void): unknown;
  errorEvents: string[];
}

function client(topology: RedisTopology): Client {
  switch (topology.kind) {
    case 'url': {
      const redis = createClient({ ...commanderOptions, ...nodeOptions(), url: topology.url });
      return { commands: redis, connect: () => redis.connect(), close: () => redis.close(), destroy: () => redis.destroy(), on: (e, l) => redis.on(e, l), errorEvents: ['error'] };
    }
    case 'sentinel': {
      const sentinel = createSentinel({
        ...commanderOptions,
        name: topology.name,
        sentinelRootNodes: topology.sentinels,
        nodeClientOptions: nodeOptions(topology.auth),
        sentinelClientOptions: { socket: nodeOptions().socket },
        // no periodic scan: each scan holds every command until it has asked a sentinel anew, and a sentinel that
        // stops answering (frozen, not gone) held them for good. The client asks the sentinels again when a
        // sentinel announces a change, when its primary's connection breaks and when the primary answers READONLY
        scanInterval: 0,
        // commands on one connection of its own, as a plain client sends them: without it each command leases a
        // connection from the pool, several times a plain client's CPU for a GET
        reserveClient: true,
        passthroughClientErrorEvents: true,
      });
      return {
        commands: sentinel,
        connect: () => sentinel.connect(),
        close: () => sentinel.close(),
        destroy: () => sentinel.destroy(),
        on: (e, l) => sentinel.on(e, l),
        errorEvents: ['error'],
      };
    }
    case 'cluster': {
      const cluster = createCluster({
        ...commanderOptions,
        rootNodes: topology.nodes.map((node) => ({ socket: node })),
        defaults: nodeOptions(topology.auth),
        topologyRefreshOnReconnectionAttemptStrategy: CLUSTER_REFRESH_AFTER_MS,
      });
      const watchdog = watchStalledPrimaries(cluster);
      // a close that did not finish has already forgotten the node clients it was waiting on: destroy those
      const nodeClients = () => [...cluster.masters, ...cluster.replicas].map((node) => node.client);
      let closing: ReturnType<typeof nodeClients> = [];
      return {
        commands: cluster,
        connect: () => cluster.connect(),
        stop: () => clearInterval(watchdog),
        // a cluster that answers but leaves slots unserved would fail a share of sessions for good
        async unfit() {
          // every slot served, not only cluster_state:ok (which stays ok with cluster-require-full-coverage no)
          const fit = cluster.masters.length > 0 && /cluster_slots_ok:16384\b/.test(String(await cluster.sendCommand(undefined, true, ['CLUSTER', 'INFO'])));
          return fit ? undefined : 'it is up but does not serve every slot (cluster_slots_ok below 16384)';
        },
        close: () => {
          closing = nodeClients();
          return cluster.close();
        },
        destroy: async () => {
          await Promise.allSettled([cluster.destroy(), ...closing.map((node) => (node?.isOpen ? node.destroy() : undefined))]);
        },
        on: (e, l) => cluster.on(e, l),
        errorEvents: ['error', 'node-error'],
      };
    }
  }
}

// eslint-disable-next-line @typescript-eslint/no-empty-object-type -- redis's own defaults: no modules, functions, scripts or type mapping
type Cluster = RedisClusterType<{}, {}, {}, 2, {}>;

/**
 * The cluster client reads the slot map again when a connection breaks or a node answers MOVED, never while a
 * primary is frozen with its connections open (a stopped process, a partition that drops packets): its shard's
 * commands wait, each request gets its 503 at the deadline, and that goes on after a replica has taken over, until
 * TCP gives up minutes later. So each primary gets a PING a second; while one has not answered within the command
 * deadline, the slot map is read again from the other nodes (which answer at once), and once a replica has taken the
 * frozen primary's slots, its shard is served again. Written here because the client has no such check: its
 * `rediscover` is the one it runs itself on MOVED.
 */
function watchStalledPrimaries(cluster: Cluster): NodeJS.Timeout {
  const waiting = new Map<string, number>();
  const timer = setInterval(() => {
    const stalled = new Set<string>();
    for (const primary of cluster.masters) {
      const client = primary.client;
      if (!client?.isReady) continue;
      const since = waiting.get(primary.address);
      if (since !== undefined) {
        if (Date.now() - since >= COMMAND_TIMEOUT_MS) stalled.add(primary.address);
        continue;
      }
      waiting.set(primary.address, Date.now());
      client.ping().then(
        () => waiting.delete(primary.address),
        () => waiting.delete(primary.address),
      );
    }
    if (stalled.size > 0) cluster._slots.rediscover(undefined, stalled).catch(() => {});
  }, CLUSTER_WATCH_INTERVAL_MS);
  timer.unref();
  return timer;
}

/** `promise`, or a rejection once `ms` have passed: the waiting stops, not the work */
export function within<T>(promise: Promise<T>, ms: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_resolve, reject) => (timer = setTimeout(() => reject(new Error(`no answer within ${ms} ms`)), ms)));
  return Promise.race([promise, late]).finally(() => clearTimeout(timer));
}

/** where a topology is, and the variable that named it, as messages say it */
function describeTopology(topology: RedisTopology): string {
  switch (topology.kind) {
    case 'url':
      return `Redis at ${maskUrlPassword(topology.url)} (REDIS_URL)`;
    case 'sentinel':
      return `Redis Sentinel "${topology.name}" at ${describeNodes(topology.sentinels)} (REDIS_SENTINELS)`;
    case 'cluster':
      return `Redis Cluster at ${describeNodes(topology.nodes)} (REDIS_CLUSTER_NODES)`;
  }
}

/**
 * A connection to the Redis deployment the configuration names: one Redis (REDIS_URL), a primary found through
 * Sentinel (REDIS_SENTINELS), or a Cluster (REDIS_CLUSTER_NODES). Every connection answers in RESP2 with no
 * per-command timeout of its own, fails commands at once while its node is away, and reconnects by itself.
 */
export function connectRedis(topology: RedisTopology, logger: Logger): RedisConnection {
  const where = describeTopology(topology);
  const redis = client(topology);
  let lastError: unknown;
  for (const event of redis.errorEvents) {
    redis.on(event, (err: unknown) => {
      lastError = err;
      // a connection opened during a request keeps its context: the line is about the process, not that request
      outsideRequests(() => logger.warn({ err, redis: where }, 'redis connection error'));
    });
  }
  let connected = false;
  // drops every connection at once; a Sentinel client may take a while to let go: not waited for past CLOSE_TIMEOUT_MS
  const drop = () => within((async () => redis.destroy())(), CLOSE_TIMEOUT_MS).catch(() => {});
  const giveUp = () => {
    connected = false;
    redis.stop?.();
    // not waited for: the message is owed now
    void drop();
  };

  return {
    commands: redis.commands,
    sharded: topology.kind === 'cluster',
    async connect() {
      const deadline = Date.now() + STARTUP_TIMEOUT_MS;
      let unfit: string | undefined;
      try {
        await within(redis.connect(), STARTUP_TIMEOUT_MS);
        connected = true;
        unfit = await within(redis.unfit?.() ?? Promise.resolve(undefined), deadline - Date.now());
      } catch (err) {
        giveUp();
        // the socket's last error says more ("ECONNREFUSED") than the timeout that ended the wait
        const seen = lastError ?? err;
        const reason = seen instanceof Error ? seen.message : String(seen);
        throw new Error(`Cannot reach ${where} for SESSION_STORE=redis: ${reason}`, { cause: err });
      }
      if (unfit !== undefined) {
        // said at once: a process manager starts the server again, with a client that learns the slots anew
        giveUp();
        throw new Error(`${where}: ${unfit}`);
      }
    },
    async close() {
      redis.stop?.();
      if (!connected) return;
      connected = false;
      // a clean close when Redis is there, but never longer than CLOSE_TIMEOUT_MS: a stalled Redis never answers
      // it, and the client waits for every command still queued (a deadline stops waiting, not the command)
      await within(redis.close(), CLOSE_TIMEOUT_MS).catch(drop);
    },
  };
}
