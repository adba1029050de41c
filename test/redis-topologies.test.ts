// Redis beyond one node, proven by killing primaries (kill -9) while two app instances serve requests: Sentinel
// (a primary, a replica, three sentinels) and Cluster (three primaries, three replicas), each started by the test on
// free loopback ports from the machine's redis-server and stopped after it.
import pino from 'pino';
import { createApp } from '../src/app';
import type { Env } from '../src/config';
import { createSessionStore } from '../src/stores';
import type { SessionStore } from '../src/stores/types';
import { ClusterTopology, describeWith, listen, redisCli, SentinelTopology, sleep, testConfig, until } from './helpers';
import { freePort, startRedisNode } from './processes';
import { GLOBAL_STAMP, userKeys } from '../src/stores/redis-index';
import { userTag } from '../src/session';

// a failover takes seconds, and a test may wait for two
jest.setTimeout(60_000);

interface Instance {
  url: string;
}

/** app instances on one Redis deployment, each with connections of its own, on real sockets; all stopped after the block */
function instances(where: () => Env) {
  const opened: { sessions: SessionStore; close(): Promise<void> }[] = [];
  afterAll(async () => {
    for (const { sessions, close } of opened) {
      await close();
      await sessions.close();
    }
  });
  return async (env: Env = {}): Promise<Instance> => {
    // each test names its clients' addresses, so the login limit counts only what a test means it to
    const config = testConfig({ SESSION_STORE: 'redis', TRUST_PROXY: 'loopback', LOGIN_RATE_LIMIT_PER_MINUTE: '1000', ...where(), ...env });
    const sessions = await createSessionStore(config, pino({ level: 'silent' }));
    await sessions.ready();
    const app = createApp({ config, store: sessions.store, rateLimitStore: sessions.rateLimitStore?.() });
    const server = await listen(app);
    opened.push({ sessions, close: server.close });
    return { url: server.url };
  };
}

interface Answer {
  status: number;
  name: string | undefined;
  tookMs: number;
}

let addresses = 0;
/** a client address no other request of the file uses */
const someAddress = () => `198.51.${Math.floor(++addresses / 250)}.${addresses % 250}`;

async function call(instance: Instance, method: string, path: string, headers: Record<string, string> = {}): Promise<Answer & { cookie?: string }> {
  const started = Date.now();
  try {
    const res = await fetch(instance.url + path, { method, headers, signal: AbortSignal.timeout(8000) });
    const body = (await res.json()) as { data?: { name?: string } };
    const cookie = res.headers.get('set-cookie')?.split(';')[0];
    return { status: res.status, name: body.data?.name, tookMs: Date.now() - started, cookie };
  } catch {
    // no answer within 8 s, or a connection that failed: never what a client may get
    return { status: 0, name: undefined, tookMs: Date.now() - started };
  }
}

interface Login {
  name: string;
  cookie: string;
}

async function login(instance: Instance, name: string, address = someAddress()): Promise<Answer & { cookie?: string }> {
  return call(instance, 'POST', `/login?name=${encodeURIComponent(name)}`, { 'X-Forwarded-For': address });
}

async function loggedIn(instance: Instance, name: string): Promise<Login> {
  const res = await login(instance, name);
  if (res.status !== 201 || !res.cookie) throw new Error(`login of ${name} answered ${res.status}`);
  return { name, cookie: res.cookie };
}

const whoIs = async (instance: Instance, session: Login): Promise<Answer> => call(instance, 'GET', '/user', { Cookie: session.cookie });

interface Sample extends Answer {
  /** ms from the kill to when the request was sent */
  at: number;
  session: Login;
}

/**
 * Reads every session in turn, alternating instances, from now until `ms` after `killedAt()` (set once the kill
 * happens): what a steady stream of GET /user sees through a failover.
 */
async function readThrough(apps: Instance[], sessions: Login[], killedAt: () => number | undefined, ms: number): Promise<Sample[]> {
  const samples: Sample[] = [];
  const worker = async (offset: number) => {
    for (let i = offset; ; i += 4) {
      const kill = killedAt();
      if (kill !== undefined && Date.now() - kill > ms) return;
      const session = sessions[i % sessions.length]!;
      const sent = Date.now();
      const answer = await whoIs(apps[i % apps.length]!, session);
      samples.push({ ...answer, at: kill === undefined ? -1 : sent - kill, session });
      await sleep(20);
    }
  };
  await Promise.all([0, 1, 2, 3].map(worker));
  return samples.filter((sample) => sample.at >= 0);
}

/** only a session's own answer or the store-unavailable 503, each within 5 s: no 500, no hang, no lost session */
function shouldBeServedOr503(samples: Sample[]): void {
  const wrong = samples.filter((s) => !(s.status === 503 || (s.status === 200 && s.name === s.session.name)));
  expect(wrong.map((s) => `${s.status} ${s.name} for ${s.session.name} at ${s.at} ms`)).toEqual([]);
  expect(samples.filter((s) => s.tookMs >= 5000).map((s) => `${s.status} after ${s.tookMs} ms`)).toEqual([]);
}

const unavailable = (samples: Sample[]) => samples.filter((s) => s.status !== 200);

describeWith(['redis-server', 'redis-cli'], 'sessions on Redis Sentinel, through failovers', () => {
  let topology: SentinelTopology;
  const instance = instances(() => ({ REDIS_SENTINELS: topology.sentinelList }));

  beforeAll(async () => {
    topology = await SentinelTopology.start();
  });

  afterAll(async () => {
    await topology?.stop();
  });

  it('when the primary is killed -9 while two instances serve, then only 503s, each within 5 s and none 10 s after the kill; every session from before is served after by both, and logins work on both', async () => {
    const [a, b] = [await instance(), await instance()];
    const sessions = await Promise.all(Array.from({ length: 12 }, (_, i) => loggedIn(i % 2 ? a : b, `sentinel-${i}`)));
    await topology.synced();

    const kill: { at?: number } = {};
    const reading = readThrough([a, b], sessions, () => kill.at, 12_000);
    await sleep(300);
    kill.at = Date.now();
    const old = await topology.killPrimary();
    const promoted = await topology.failedOver(old);
    const samples = await reading;

    expect(promoted).not.toBe(old);
    shouldBeServedOr503(samples);
    expect(unavailable(samples).filter((s) => s.at >= 10_000)).toEqual([]);
    // the failover was seen: reads failed for a while, and were served after it
    expect(unavailable(samples).length).toBeGreaterThan(0);
    for (const session of sessions) {
      expect((await whoIs(a, session)).name).toBe(session.name);
      expect((await whoIs(b, session)).name).toBe(session.name);
    }
    const onA = await loggedIn(a, 'after-on-a');
    const onB = await loggedIn(b, 'after-on-b');
    expect((await whoIs(b, onA)).name).toBe('after-on-a');
    expect((await whoIs(a, onB)).name).toBe('after-on-b');
  });

  /** a killed data node started again, once the sentinels have made it a replica with every write of the primary's */
  async function replicaBack(): Promise<number> {
    let old = topology.data.find((node) => node.process?.signalCode === 'SIGKILL');
    if (!old) {
      // run alone, this test kills a primary first
      await topology.failedOver(await topology.killPrimary());
      old = topology.data.find((node) => node.process?.signalCode === 'SIGKILL')!;
    }
    await topology.restart(old.port);
    await until('the restarted node to be a replica', async () => (await redisCli(['-p', String(old.port), 'ROLE'])).startsWith('slave'));
    await topology.synced();
    return old.port;
  }

  it('when the killed node comes back, then it is a replica, and when the new primary dies in turn, it takes over and the sessions are still there', async () => {
    const [a, b] = [await instance(), await instance()];
    const before = await loggedIn(a, 'round-two');
    const old = await replicaBack();

    const dead = await topology.killPrimary();
    const promoted = await topology.failedOver(dead);

    expect(promoted).toBe(old);
    for (let waited = 0; (await whoIs(b, before)).status !== 200 && waited < 10_000; waited += 200) await sleep(200);
    expect((await whoIs(b, before)).name).toBe('round-two');
    expect((await loggedIn(a, 'round-two-after')).cookie).toBeDefined();
  });

  it('when the sentinels switch primaries on purpose (SENTINEL FAILOVER: no connection breaks, the old primary answers READONLY), then logins work on the new primary within 10 s and no session is lost', async () => {
    const a = await instance();
    const before = await loggedIn(a, 'planned');
    await replicaBack();
    const old = await topology.primaryPort();

    await topology.switchover();
    // the client's connection to the old primary is still open: its first write there meets READONLY. (A write that
    // reached the old primary between the promotion and its demotion is lost: Sentinel does not pause writes)
    await until('the old primary to be a replica', async () => (await redisCli(['-p', String(old), 'ROLE'])).startsWith('slave'));
    const started = Date.now();
    let after = await login(a, 'planned-after');
    while (after.status !== 201 && Date.now() - started < 10_000) {
      expect(after.status).toBe(503);
      await sleep(100);
      after = await login(a, 'planned-after');
    }
    await topology.synced();

    expect(after.status).toBe(201);
    expect((await whoIs(a, before)).name).toBe('planned');
    expect((await whoIs(a, { name: 'planned-after', cookie: after.cookie! })).name).toBe('planned-after');
  }, 150_000);

  it('when the first sentinel listed freezes (SIGSTOP: its connections stay open, nothing answers), then requests are served as before', async () => {
    const a = await instance();
    const session = await loggedIn(a, 'frozen-sentinel');
    const frozen = topology.sentinels[0]!.process!;

    frozen.kill('SIGSTOP');
    const answers: Answer[] = [];
    try {
      for (const started = Date.now(); Date.now() - started < 4000; ) {
        answers.push(await whoIs(a, session));
        await sleep(25);
      }
    } finally {
      frozen.kill('SIGCONT');
    }

    expect(answers.filter((answer) => answer.status !== 200 || answer.name !== 'frozen-sentinel' || answer.tookMs > 500).map((answer) => `${answer.status} in ${answer.tookMs} ms`)).toEqual([]);
  });

  it('when two instances count logins from one client, then they share one budget', async () => {
    const [a, b] = [await instance({ LOGIN_RATE_LIMIT_PER_MINUTE: '4' }), await instance({ LOGIN_RATE_LIMIT_PER_MINUTE: '4' })];
    const address = '192.0.2.77';

    const statuses = [];
    for (let i = 0; i < 5; i++) statuses.push((await login(i % 2 ? a : b, `budget-${i}`, address)).status);

    expect(statuses).toEqual([201, 201, 201, 201, 429]);
    expect((await login(a, 'budget-again', address)).status).toBe(429);
  });
});

describeWith(['redis-server', 'redis-cli'], 'sessions on Redis Cluster, through a failover', () => {
  let topology: ClusterTopology;
  // any reachable subset of the nodes will do: the client learns the rest
  const instance = instances(() => ({ REDIS_CLUSTER_NODES: topology.nodeList.split(',').slice(0, 3).join(',') }));

  beforeAll(async () => {
    topology = await ClusterTopology.start();
  });

  afterAll(async () => {
    await topology?.stop();
  });

  /** the port of the primary holding each session's key */
  async function shardsOf(sessions: Login[]): Promise<Map<Login, number>> {
    const where = new Map<Login, number>();
    const keys = new Map<number, string>();
    for (const port of (await topology.primaries()).keys()) keys.set(port, await redisCli(['-p', String(port), '--scan', '--pattern', 'sess:*']));
    for (const session of sessions) {
      const sid = decodeURIComponent(session.cookie.split('=')[1]!).slice(2).split('.')[0]!;
      for (const [port, listed] of keys) if (listed.includes(sid)) where.set(session, port);
    }
    return where;
  }

  it('when the primary holding the global stamp is killed -9, then the other shards\' sessions are 503 for at most 2 s, the dead shard\'s are served again within 10 s with no restart, and nothing is lost', async () => {
    // no login limit: its counter sits on a shard of its own, which could be the dead one
    const [a, b] = [await instance({ LOGIN_RATE_LIMIT_PER_MINUTE: '0' }), await instance({ LOGIN_RATE_LIMIT_PER_MINUTE: '0' })];
    const sessions = await Promise.all(Array.from({ length: 30 }, (_, i) => loggedIn(i % 2 ? a : b, `cluster-{${i}}-🙂`)));
    const shards = await shardsOf(sessions);
    // the sessions spread over all three shards
    expect(new Set(shards.values()).size).toBe(3);
    expect(shards.size).toBe(sessions.length);
    // the shard every login asks for the global stamp: the worst one to lose
    const dead = await topology.primaryOf(GLOBAL_STAMP);
    // a user whose keys are on another shard
    let live = 0;
    while ((await topology.primaryOf(userKeys(`cluster-live-${live}`)[0])) === dead) live += 1;
    await topology.synced();

    const kill: { at?: number } = {};
    const reading = readThrough([a, b], sessions, () => kill.at, 12_000);
    await sleep(300);
    kill.at = Date.now();
    await topology.kill(dead);
    // before the cluster even marks the primary failed (a node timeout, 1 s): a login on a live shard goes on
    // with the global stamp this instance last read
    const during = await login(a, `cluster-live-${live}`);
    await topology.healed(dead);
    const samples = await reading;

    expect(during.status).toBe(201);
    shouldBeServedOr503(samples);
    const onDead = samples.filter((s) => shards.get(s.session) === dead);
    const elsewhere = samples.filter((s) => shards.get(s.session) !== dead);
    const failed = unavailable(elsewhere);
    if (failed.length > 0) expect(Math.max(...failed.map((s) => s.at + s.tookMs)) - Math.min(...failed.map((s) => s.at))).toBeLessThanOrEqual(2000);
    expect(unavailable(onDead).length).toBeGreaterThan(0);
    expect(unavailable(onDead).filter((s) => s.at >= 10_000)).toEqual([]);
    for (const session of sessions) {
      expect((await whoIs(a, session)).name).toBe(session.name);
      expect((await whoIs(b, session)).name).toBe(session.name);
    }
    expect((await whoIs(b, { name: `cluster-live-${live}`, cookie: during.cookie! })).name).toBe(`cluster-live-${live}`);
    const after = await loggedIn(a, 'cluster-after');
    expect((await whoIs(b, after)).name).toBe('cluster-after');
  });

  it('when an operator ends everyone on A, then A refuses the sessions at once, and B at its first request a second later', async () => {
    const token = 'an-admin-token-of-at-least-32-characters';
    const [a, b] = [await instance({ ADMIN_TOKEN: token }), await instance({ ADMIN_TOKEN: token })];
    const onA = await loggedIn(a, 'everyone-a');
    const onB = await loggedIn(b, 'everyone-b');
    // B has read the global stamp (with its session) before the operator acts
    expect((await whoIs(b, onB)).name).toBe('everyone-b');

    const ended = await call(a, 'DELETE', '/admin/sessions', { Authorization: `Bearer ${token}` });
    expect(ended.status).toBe(200);
    const onAAfter = await whoIs(a, onA);
    await sleep(1100);
    // B's first request since (nothing else read B's session, which would have deleted it): no stamp older than a
    // second serves it
    const onBAfter = await whoIs(b, onB);

    expect([onAAfter.status, onAAfter.name]).toEqual([200, undefined]);
    expect([onBAfter.status, onBAfter.name]).toEqual([200, undefined]);
    expect((await whoIs(b, onA)).name).toBeUndefined();
  });

  it('when two instances count logins from one client, then they share one budget', async () => {
    const [a, b] = [await instance({ LOGIN_RATE_LIMIT_PER_MINUTE: '4' }), await instance({ LOGIN_RATE_LIMIT_PER_MINUTE: '4' })];
    const address = '192.0.2.78';

    const statuses = [];
    for (let i = 0; i < 5; i++) statuses.push((await login(i % 2 ? a : b, `budget-${i}`, address)).status);

    expect(statuses).toEqual([201, 201, 201, 201, 429]);
  });
});

describeWith(['redis-server', 'redis-cli'], 'sessions on Redis Cluster, through a frozen primary', () => {
  let topology: ClusterTopology;
  const instance = instances(() => ({ REDIS_CLUSTER_NODES: topology.nodeList, LOGIN_RATE_LIMIT_PER_MINUTE: '0' }));

  beforeAll(async () => {
    topology = await ClusterTopology.start();
  });

  afterAll(async () => {
    await topology?.stop();
  });

  it('when a primary freezes (SIGSTOP: its connections stay open, nothing answers), then its shard\'s sessions are served again within 10 s, by the replica that took over, while it stays frozen', async () => {
    const a = await instance();
    const sessions = await Promise.all(Array.from({ length: 24 }, (_, i) => loggedIn(a, `frozen-${i}`)));
    const keys = await Promise.all(sessions.map(async (session) => topology.primaryOf(`sess:{${userTag(session.name)}}`)));
    const frozen = keys[0]!;
    await topology.synced();

    const kill: { at?: number } = {};
    const reading = readThrough([a], sessions, () => kill.at, 12_000);
    await sleep(300);
    kill.at = Date.now();
    topology.freeze(frozen);
    let samples: Sample[];
    try {
      await topology.healed(frozen);
      samples = await reading;
    } finally {
      topology.thaw(frozen);
    }

    shouldBeServedOr503(samples);
    const onFrozen = samples.filter((s) => keys[sessions.indexOf(s.session)] === frozen);
    expect(unavailable(onFrozen).length).toBeGreaterThan(0);
    expect(unavailable(onFrozen).filter((s) => s.at >= 10_000)).toEqual([]);
    expect(onFrozen.filter((s) => s.at >= 10_000).length).toBeGreaterThan(0);
  });
});

describeWith('redis-server', 'start-up on a Redis Cluster that does not serve every slot', () => {
  it('when the nodes answer but do not serve every slot, then start-up stops within 15 s saying so and naming REDIS_CLUSTER_NODES', async () => {
    // a cluster node no slot was ever given to: up, answering, serving nothing
    const port = await freePort();
    const node = await startRedisNode(['--cluster-enabled', 'yes', '--cluster-config-file', `nodes-${port}.conf`], port);
    try {
      const sessions = await createSessionStore(testConfig({ SESSION_STORE: 'redis', REDIS_CLUSTER_NODES: `127.0.0.1:${port}` }), pino({ level: 'silent' }));
      const started = Date.now();

      const failure = await sessions.ready().then(() => undefined, (err: unknown) => err);

      expect(Date.now() - started).toBeLessThan(15_000);
      expect(String(failure)).toContain(`Redis Cluster at 127.0.0.1:${port} (REDIS_CLUSTER_NODES): it is up but does not serve every slot (cluster_slots_ok below 16384)`);
    } finally {
      await node.stop();
    }
  });
});
