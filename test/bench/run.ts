// `npm run bench`: the hardened server against the tutorial's setup and bare Express, side by side in one run,
// scenarios in interleaved rounds, medians and ratios. `--quick` is the short run CI makes; `--out FILE` names
// the JSON file (default test/bench/results/latest.json); `--ours FILE` runs another build of ours (an older
// commit's dist/server.js, say) in place of this one, for a before-and-after; `--expiring-only` runs only the
// full-store-with-expiries scenario. With redis-server and redis-cli, GET /user also runs on Redis Sentinel and
// Redis Cluster, and each then goes through a failover (see failover.ts).
import { spawnSync, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import autocannon, { type Options, type Result } from 'autocannon';
import { ClusterTopology, freePort, installed, listening, RedisServer, ROOT, SentinelTopology, sleep, spawnNode } from '../processes';
import { failover, type Failover } from './failover';

const args = process.argv.slice(2);
const quick = args.includes('--quick');
const outIndex = args.indexOf('--out');
const OUT = outIndex >= 0 && args[outIndex + 1] ? path.resolve(args[outIndex + 1]) : path.join(ROOT, 'test', 'bench', 'results', 'latest.json');
const expiringOnly = args.includes('--expiring-only');
const oursIndex = args.indexOf('--ours');
const OURS = oursIndex >= 0 && args[oursIndex + 1] ? path.resolve(args[oursIndex + 1]) : path.join(ROOT, 'dist', 'server.js');

const ROUNDS = quick ? 1 : 5;
const SECONDS = quick ? 1 : 5;
const FLOOD_SECONDS = quick ? 5 : 30;
// a full memory store whose sessions expire one after another while logins keep arriving: more are offered than
// expire (max / idle a second), so from the time it fills, the store stays full and every login finds it so; a
// large store, as a scan of the whole store costs in proportion to its size
const EXPIRY = quick
  ? { max: 2000, idleSeconds: 2, loginsPerSecond: 1500, seconds: 6 }
  : { max: 40_000, idleSeconds: 25, loginsPerSecond: 3000, seconds: 40 };
const WARMUP_SECONDS = quick ? 1 : 3;
const CONNECTIONS = 10;
const SECRET = 'benchmark-secret-benchmark-secret-benchmark';
// our server as deployed behind a TLS-terminating proxy: production rules, Secure cookies, the proxy's header
const PROXY_HEADERS = { 'x-forwarded-proto': 'https' };

// ---------------------------------------------------------------- servers

interface Server {
  name: string;
  url: string;
  child: ChildProcess;
  headers: Record<string, string>;
  /** bytes it has printed (its log) */
  printed: () => number;
}

async function startServer(name: string, script: string, env: Record<string, string>, headers: Record<string, string> = {}): Promise<Server> {
  const port = await freePort();
  const run = spawnNode([script], { APPLICATION_PORT: String(port), ...env });
  await listening(run).catch((err: unknown) => {
    throw new Error(`${name}: ${err instanceof Error ? err.message : String(err)}`);
  });
  return { name, url: `http://127.0.0.1:${port}`, child: run.child, headers, printed: run.bytes };
}

/** ms from spawn to the start-up line (polled every 50 ms), median of three starts with `env` */
async function startupMs(script: string, env: Record<string, string>): Promise<number> {
  const times: number[] = [];
  for (let i = 0; i < 3; i++) {
    const started = Date.now();
    const run = spawnNode([script], { APPLICATION_PORT: String(await freePort()), ...env });
    await listening(run);
    times.push(Date.now() - started);
    run.child.kill('SIGTERM');
    await once(run.child, 'exit');
  }
  return times.sort((a, b) => a - b)[1]!;
}

async function stopServer(server: Server): Promise<void> {
  if (server.child.exitCode !== null) return;
  server.child.kill('SIGTERM');
  await Promise.race([once(server.child, 'exit'), sleep(5000)]);
  if (server.child.exitCode === null) server.child.kill('SIGKILL');
}

function rssMb(pid: number): number {
  try {
    const status = readFileSync(`/proc/${pid}/status`, 'utf8');
    const kb = Number(/VmRSS:\s+(\d+)/.exec(status)?.[1]);
    return Math.round((kb / 1024) * 10) / 10;
  } catch {
    const kb = Number(spawnSync('ps', ['-o', 'rss=', '-p', String(pid)]).stdout.toString().trim());
    return Math.round((kb / 1024) * 10) / 10;
  }
}

const CLOCK_TICKS = Number(spawnSync('getconf', ['CLK_TCK']).stdout?.toString().trim()) || 100;

/** CPU time (user + system) a process has used, in ms; null where /proc is not there */
function cpuMs(pid: number): number | null {
  try {
    // the fields after the command name, which sits in parentheses and may hold spaces
    const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ', 2)[1]!.split(' ');
    return ((Number(fields[11]) + Number(fields[12])) * 1000) / CLOCK_TICKS;
  } catch {
    return null;
  }
}

function cookieFrom(headers: Record<string, string | string[]>): string | undefined {
  const setCookie = headers['set-cookie'] ?? headers['Set-Cookie'];
  const first = Array.isArray(setCookie) ? setCookie[0] : setCookie;
  return first?.split(';', 1)[0];
}

// the reader of the GET /user scenario: a name of its own, so no other scenario's logins end its session (a user
// holds SESSION_MAX_PER_USER sessions at most)
async function login(server: Server, name = 'reader'): Promise<string> {
  const res = await fetch(`${server.url}/login?name=${name}`, { method: 'POST', headers: server.headers });
  const cookie = res.headers.getSetCookie()[0]?.split(';', 1)[0];
  if (res.status !== 201 || !cookie) throw new Error(`${server.name}: login answered ${res.status} without a cookie`);
  return cookie;
}

// ---------------------------------------------------------------- load

interface Figures {
  rps: number;
  p50: number;
  p99: number;
  errors: number;
  non2xx: number;
  requests: number;
  /** the server's CPU time per request: what the server spends, whatever the load generator gets of the cores */
  cpuUsPerRequest: number | null;
}

function figures(result: Result, cpuUsedMs: number | null = null): Figures {
  return {
    rps: Math.round(result.requests.total / result.duration),
    p50: result.latency.p50,
    p99: result.latency.p99,
    errors: result.errors + result.timeouts,
    non2xx: result.non2xx,
    requests: result.requests.total,
    cpuUsPerRequest: cpuUsedMs !== null && result.requests.total > 0 ? Math.round((cpuUsedMs * 1000) / result.requests.total) : null,
  };
}

let duration = SECONDS;

function load(options: Options): Promise<Result> {
  return autocannon({ connections: CONNECTIONS, duration, ...options });
}

interface Scenario {
  name: string;
  title: string;
  targets: string[];
  run(server: Server): Promise<Result>;
}

const sessionCookies = new Map<string, string>();

const scenarios: Scenario[] = [
  {
    name: 'user',
    title: 'GET /user with a live session',
    targets: ['ours', 'ours-metrics', 'tutorial', 'bare', 'bare-same-server', 'ours-redis', 'ours-sentinel', 'ours-cluster'],
    run: async (server) => {
      const cookie = sessionCookies.get(server.name) ?? (server.name.startsWith('bare') ? '' : await login(server));
      sessionCookies.set(server.name, cookie);
      return load({ url: `${server.url}/user`, headers: { ...server.headers, cookie } });
    },
  },
  {
    name: 'login',
    title: 'POST /login, a new session each time',
    targets: ['ours', 'tutorial'],
    // a new user each time, as many users logging in would be
    run: (server) => load({ url: `${server.url}/login?name=bench-[<id>]`, idReplacement: true, method: 'POST', headers: server.headers }),
  },
  {
    name: 'flow',
    title: 'login, user, logout (requests/s; a flow is 3 requests)',
    targets: ['ours', 'tutorial'],
    run: (server) =>
      load({
        url: server.url,
        requests: [
          {
            method: 'POST',
            path: '/login?name=bench',
            headers: server.headers,
            onResponse: (_status, _body, context, headers) => {
              (context as { cookie?: string }).cookie = cookieFrom(headers as Record<string, string | string[]>);
            },
          },
          {
            method: 'GET',
            path: '/user',
            setupRequest: (request, context) => ({ ...request, headers: { ...server.headers, cookie: String((context as { cookie?: string }).cookie ?? '') } }),
          },
          {
            method: 'POST',
            path: '/logout',
            setupRequest: (request, context) => ({ ...request, headers: { ...server.headers, cookie: String((context as { cookie?: string }).cookie ?? '') } }),
          },
        ],
      }),
  },
];

// ---------------------------------------------------------------- flood

interface Flood {
  server: string;
  logLevel: string;
  seconds: number;
  sessionMemoryMax: number | null;
  loginsPerSecond: number;
  created: number;
  refused503: number;
  rssBeforeMb: number;
  rssPeakMb: number;
  rssAfterMb: number;
  /** what the server logged during the flood */
  logMb: number;
  user: Figures & { p999: number; max: number };
}

/** a flood of logins without cookies, while one logged-in user reads its profile 20 times a second */
async function flood(server: Server, sessionMemoryMax: number | null, logLevel = 'silent'): Promise<Flood> {
  const cookie = await login(server);
  const pid = server.child.pid!;
  const printedBefore = server.printed();
  const rssBeforeMb = rssMb(pid);
  let rssPeakMb = rssBeforeMb;
  const sampler = setInterval(() => (rssPeakMb = Math.max(rssPeakMb, rssMb(pid))), 250);
  const [logins, user] = await Promise.all([
    // a name per login, so the flood fills the store (and the per-user index) rather than one user's 50 sessions
    autocannon({ url: `${server.url}/login?name=flood-[<id>]`, idReplacement: true, method: 'POST', headers: server.headers, connections: CONNECTIONS, duration: FLOOD_SECONDS }),
    autocannon({ url: `${server.url}/user`, headers: { ...server.headers, cookie }, connections: 1, overallRate: 20, duration: FLOOD_SECONDS }),
  ]);
  clearInterval(sampler);
  const rssAfterMb = rssMb(pid);
  return {
    server: server.name,
    logLevel,
    seconds: FLOOD_SECONDS,
    sessionMemoryMax,
    loginsPerSecond: Math.round(logins.requests.total / logins.duration),
    created: logins['2xx'],
    refused503: logins.non2xx,
    rssBeforeMb,
    rssPeakMb: Math.max(rssPeakMb, rssAfterMb),
    rssAfterMb,
    logMb: Math.round(((server.printed() - printedBefore) / 2 ** 20) * 10) / 10,
    user: { ...figures(user), p999: user.latency.p99_9, max: user.latency.max },
  };
}

const logBytesPerLogin = (flood: Flood): number => Math.round((flood.logMb * 2 ** 20) / Math.max(1, flood.created + flood.refused503));

interface ExpiringStore {
  sessionMemoryMax: number;
  idleSeconds: number;
  seconds: number;
  offeredLoginsPerSecond: number;
  /** from one idle timeout (and a second) after the start, when sessions expire as fast as they are let in */
  steady: {
    seconds: number;
    /** logins that got a session, per second */
    loginsPerSecond: number;
    refusedPerSecond: number;
    cpuUsPerLogin: number | null;
    /** the resident user's GET /user latency */
    userP50: number;
    userP99: number;
  };
  user: Figures;
}

const percentile = (values: number[], p: number): number => {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted.length === 0 ? 0 : sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
};

/** autocannon's run as a promise, with each response passed to `onResponse` as it comes */
function loadWatching(options: Options, onResponse: (status: number, ms: number) => void): Promise<Result> {
  return new Promise((resolve, reject) => {
    const instance = autocannon(options, (err, result) => (err ? reject(err) : resolve(result)));
    instance.on('response', (_client, status: number, _bytes, ms: number) => onResponse(status, ms));
  });
}

/**
 * A full memory store whose sessions expire one after another: logins are offered at a steady rate, fill the
 * store, and from one idle timeout on, sessions expire as fast as they were let in while logins keep coming;
 * one logged-in user reads its profile 20 times a second (and so stays logged in). The steady phase, after the
 * store has filled and expiries have begun, is reported on its own.
 */
async function expiringStore(server: Server): Promise<ExpiringStore> {
  const cookie = await login(server);
  const pid = server.child.pid!;
  const steadyFrom = Date.now() + (EXPIRY.idleSeconds + 1) * 1000;
  let cpuAtSteady: number | null = null;
  const sampler = setTimeout(() => (cpuAtSteady = cpuMs(pid)), steadyFrom - Date.now());
  const steady = { created: 0, refused: 0, userMs: [] as number[] };
  const [, user] = await Promise.all([
    loadWatching(
      { url: `${server.url}/login?name=steady`, method: 'POST', headers: server.headers, connections: CONNECTIONS, overallRate: EXPIRY.loginsPerSecond, duration: EXPIRY.seconds },
      (status) => {
        if (Date.now() < steadyFrom) return;
        if (status === 201) steady.created += 1;
        else steady.refused += 1;
      },
    ),
    loadWatching({ url: `${server.url}/user`, headers: { ...server.headers, cookie }, connections: 1, overallRate: 20, duration: EXPIRY.seconds }, (_status, ms) => {
      if (Date.now() >= steadyFrom) steady.userMs.push(ms);
    }),
  ]);
  clearTimeout(sampler);
  const cpuAfter = cpuMs(pid);
  const steadySeconds = EXPIRY.seconds - EXPIRY.idleSeconds - 1;
  const steadyLogins = steady.created + steady.refused;
  return {
    sessionMemoryMax: EXPIRY.max,
    idleSeconds: EXPIRY.idleSeconds,
    seconds: EXPIRY.seconds,
    offeredLoginsPerSecond: EXPIRY.loginsPerSecond,
    steady: {
      seconds: steadySeconds,
      loginsPerSecond: Math.round(steady.created / steadySeconds),
      refusedPerSecond: Math.round(steady.refused / steadySeconds),
      cpuUsPerLogin: cpuAtSteady !== null && cpuAfter !== null && steadyLogins > 0 ? Math.round(((cpuAfter - cpuAtSteady) * 1000) / steadyLogins) : null,
      userP50: Math.round(percentile(steady.userMs, 50) * 10) / 10,
      userP99: Math.round(percentile(steady.userMs, 99) * 10) / 10,
    },
    user: figures(user),
  };
}

function printExpiring(expiring: ExpiringStore): void {
  console.log(
    table([
      ['full store, steady expiries (steady phase)', 'offered/s', 'logins/s', '503s/s', 'CPU us/login', 'user p50', 'user p99', 'user non-2xx+errors (whole run)'],
      [
        `ours (max ${expiring.sessionMemoryMax}, idle ${expiring.idleSeconds} s, last ${expiring.steady.seconds} s)`,
        String(expiring.offeredLoginsPerSecond),
        String(expiring.steady.loginsPerSecond),
        String(expiring.steady.refusedPerSecond),
        String(expiring.steady.cpuUsPerLogin ?? 'n/a'),
        `${expiring.steady.userP50} ms`,
        `${expiring.steady.userP99} ms`,
        String(expiring.user.non2xx + expiring.user.errors),
      ],
    ]),
  );
}

async function runExpiring(compiled: string, production: Record<string, string>, servers: Server[]): Promise<ExpiringStore> {
  console.log(`full store with steady expiries, ${EXPIRY.seconds} s: ${EXPIRY.loginsPerSecond} logins/s offered, SESSION_MEMORY_MAX=${EXPIRY.max}, idle ${EXPIRY.idleSeconds} s`);
  const server = await startServer(
    'ours-expiring',
    compiled,
    { ...production, SESSION_MEMORY_MAX: String(EXPIRY.max), SESSION_IDLE_TIMEOUT_SECONDS: String(EXPIRY.idleSeconds) },
    PROXY_HEADERS,
  );
  servers.push(server);
  const expiring = await expiringStore(server);
  await stopServer(server);
  return expiring;
}

// ---------------------------------------------------------------- report

const median = (values: number[]): number => {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 ? sorted[mid]! : Math.round(((sorted[mid - 1]! + sorted[mid]!) / 2) * 100) / 100;
};

function summarise(rounds: Figures[]): Figures {
  return {
    rps: median(rounds.map((r) => r.rps)),
    p50: median(rounds.map((r) => r.p50)),
    p99: median(rounds.map((r) => r.p99)),
    errors: rounds.reduce((sum, r) => sum + r.errors, 0),
    non2xx: rounds.reduce((sum, r) => sum + r.non2xx, 0),
    requests: rounds.reduce((sum, r) => sum + r.requests, 0),
    cpuUsPerRequest: rounds.every((r) => r.cpuUsPerRequest !== null) ? median(rounds.map((r) => r.cpuUsPerRequest!)) : null,
  };
}

const ratio = (a: number | null | undefined, b: number | null | undefined): number | null =>
  a && b ? Math.round((a / b) * 100) / 100 : null;

function table(rows: string[][]): string {
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((row) => row[i]!.length)));
  return rows.map((row) => row.map((cell, i) => (i === 0 ? cell.padEnd(widths[i]!) : cell.padStart(widths[i]!))).join('  ')).join('\n');
}

// ---------------------------------------------------------------- main

async function main(): Promise<void> {
  const compiled = OURS;
  const production = {
    NODE_ENV: 'production',
    SESSION_SECRET: SECRET,
    TRUST_PROXY: '1',
    LOGIN_RATE_LIMIT_PER_MINUTE: '0',
    LOG_LEVEL: 'silent',
  };
  const servers: Server[] = [];
  let redis: RedisServer | undefined;
  let sentinel: SentinelTopology | undefined;
  let cluster: ClusterTopology | undefined;
  const notes: string[] = [];
  try {
    if (expiringOnly) {
      const expiring = await runExpiring(compiled, production, servers);
      printExpiring(expiring);
      mkdirSync(path.dirname(OUT), { recursive: true });
      writeFileSync(OUT, `${JSON.stringify({ date: new Date().toISOString(), quick, ours: path.relative(ROOT, OURS), expiring }, null, 2)}\n`);
      return;
    }
    // room for every session the login rounds create, and well within the heap: this run measures speed, the
    // flood measures the cap
    servers.push(await startServer('ours', compiled, { ...production, SESSION_MEMORY_MAX: '400000' }, PROXY_HEADERS));
    // the same with the metrics listener on: every request timed and counted
    servers.push(await startServer('ours-metrics', compiled, { ...production, SESSION_MEMORY_MAX: '400000', METRICS_PORT: String(await freePort()) }, PROXY_HEADERS));
    servers.push(await startServer('tutorial', path.join(ROOT, 'test', 'bench', 'baselines', 'tutorial.js'), {}));
    servers.push(await startServer('bare', path.join(ROOT, 'test', 'bench', 'baselines', 'bare.js'), {}));
    servers.push(await startServer('bare-same-server', path.join(ROOT, 'test', 'bench', 'baselines', 'bare-same-server.js'), {}));
    if (installed('redis-server')) {
      redis = await RedisServer.start();
      servers.push(await startServer('ours-redis', compiled, { ...production, SESSION_STORE: 'redis', REDIS_URL: redis.url }, PROXY_HEADERS));
    } else {
      notes.push('redis-server is not installed: the Redis scenario was skipped');
      console.warn(`SKIPPED: ${notes.at(-1)}`);
    }
    if (installed('redis-server') && installed('redis-cli')) {
      sentinel = await SentinelTopology.start();
      servers.push(await startServer('ours-sentinel', compiled, { ...production, SESSION_STORE: 'redis', REDIS_SENTINELS: sentinel.sentinelList }, PROXY_HEADERS));
      cluster = await ClusterTopology.start();
      servers.push(await startServer('ours-cluster', compiled, { ...production, SESSION_STORE: 'redis', REDIS_CLUSTER_NODES: cluster.nodeList }, PROXY_HEADERS));
    } else {
      notes.push('redis-server or redis-cli is not installed: the Sentinel and Cluster scenarios were skipped');
      console.warn(`SKIPPED: ${notes.at(-1)}`);
    }
    const byName = new Map(servers.map((server) => [server.name, server]));

    // a warm-up pass first, so the rounds compare optimised code, not the JIT's first minutes
    duration = WARMUP_SECONDS;
    for (const scenario of scenarios) {
      for (const target of scenario.targets) {
        const server = byName.get(target);
        if (server) await scenario.run(server);
      }
    }
    duration = SECONDS;

    const rounds: Record<string, Record<string, Figures[]>> = {};
    console.log(`${ROUNDS} round(s) of ${SECONDS} s per scenario and server, ${CONNECTIONS} connections, ${os.cpus().length} cores`);
    for (let round = 1; round <= ROUNDS; round += 1) {
      for (const scenario of scenarios) {
        for (const target of scenario.targets) {
          const server = byName.get(target);
          if (!server) continue;
          const cpuBefore = cpuMs(server.child.pid!);
          const run = await scenario.run(server);
          const cpuAfter = cpuMs(server.child.pid!);
          const result = figures(run, cpuBefore !== null && cpuAfter !== null ? cpuAfter - cpuBefore : null);
          ((rounds[scenario.name] ??= {})[target] ??= []).push(result);
          console.log(`  round ${round} ${scenario.name.padEnd(5)} ${target.padEnd(16)} ${String(result.rps).padStart(7)} req/s  p99 ${result.p99} ms  ${result.cpuUsPerRequest ?? '-'} us CPU/request`);
        }
      }
    }
    // the reads measured a logged-in user to the end, not an anonymous one whose session had gone
    const readersStillIn: string[] = [];
    for (const [name, cookie] of sessionCookies) {
      const server = byName.get(name);
      if (!server || cookie === '') continue;
      const res = await fetch(`${server.url}/user`, { headers: { ...server.headers, cookie } });
      if (JSON.stringify(await res.json()).includes('reader')) readersStillIn.push(name);
    }
    const readers = [...sessionCookies.entries()].filter(([, cookie]) => cookie !== '').map(([name]) => name);
    const results: Record<string, Record<string, Figures>> = {};
    for (const [scenario, byTarget] of Object.entries(rounds)) {
      for (const [target, list] of Object.entries(byTarget)) (results[scenario] ??= {})[target] = summarise(list);
    }

    // each topology through a failover, after its reads were measured: then its servers stop, leaving the cores
    // to the floods
    const failovers: Failover[] = [];
    for (const [kind, topology] of [['sentinel', sentinel], ['cluster', cluster]] as const) {
      const server = byName.get(`ours-${kind}`);
      if (!topology || !server) continue;
      console.log(`failover on ${kind}: kill -9 of the primary holding the most sessions under GET /user and logins`);
      failovers.push(await failover(kind, topology, server, quick ? { count: 50, beforeMs: 1000, afterMs: 10_000 } : {}));
      await stopServer(server);
    }

    console.log(`login flood, ${FLOOD_SECONDS} s each`);
    const floodOurs = await startServer('ours-flood', compiled, { ...production, SESSION_MEMORY_MAX: '20000' }, PROXY_HEADERS);
    servers.push(floodOurs);
    const floods = [await flood(floodOurs, 20000)];
    await stopServer(floodOurs);
    // the same flood with the log a default server writes (LOG_LEVEL=info): what logging costs under load
    const floodLogged = await startServer('ours-flood-logged', compiled, { ...production, SESSION_MEMORY_MAX: '20000', LOG_LEVEL: 'info' }, PROXY_HEADERS);
    servers.push(floodLogged);
    floods.push(await flood(floodLogged, 20000, 'info'));
    await stopServer(floodLogged);
    const floodTutorial = await startServer('tutorial-flood', path.join(ROOT, 'test', 'bench', 'baselines', 'tutorial.js'), {});
    servers.push(floodTutorial);
    floods.push(await flood(floodTutorial, null));
    await stopServer(floodTutorial);

    const expiring = await runExpiring(compiled, production, servers);

    const ratios = {
      userVsTutorial: ratio(results.user?.ours?.rps, results.user?.tutorial?.rps),
      userVsBare: ratio(results.user?.ours?.rps, results.user?.bare?.rps),
      metricsUserVsUser: ratio(results.user?.['ours-metrics']?.rps, results.user?.ours?.rps),
      // bare Express served by our HTTP server too: what is left is what the session costs (no goal)
      userVsBareSameServer: ratio(results.user?.ours?.rps, results.user?.['bare-same-server']?.rps),
      loginVsTutorial: ratio(results.login?.ours?.rps, results.login?.tutorial?.rps),
      flowVsTutorial: ratio(results.flow?.ours?.rps, results.flow?.tutorial?.rps),
      redisUserVsMemoryUser: ratio(results.user?.['ours-redis']?.rps, results.user?.ours?.rps),
      sentinelUserVsRedisUser: ratio(results.user?.['ours-sentinel']?.rps, results.user?.['ours-redis']?.rps),
      clusterUserVsRedisUser: ratio(results.user?.['ours-cluster']?.rps, results.user?.['ours-redis']?.rps),
      // the same comparisons by the server's CPU time per request (baseline's / ours: above 1 means ours is cheaper)
      userCpuVsTutorial: ratio(results.user?.tutorial?.cpuUsPerRequest, results.user?.ours?.cpuUsPerRequest),
      userCpuVsBare: ratio(results.user?.bare?.cpuUsPerRequest, results.user?.ours?.cpuUsPerRequest),
      userCpuVsBareSameServer: ratio(results.user?.['bare-same-server']?.cpuUsPerRequest, results.user?.ours?.cpuUsPerRequest),
      loginCpuVsTutorial: ratio(results.login?.tutorial?.cpuUsPerRequest, results.login?.ours?.cpuUsPerRequest),
    };
    const ours = floods[0]!;
    const logged = floods[1]!;
    // what tracing costs before the first request: the SDK and its instrumentations loaded (an endpoint where nothing listens)
    const startup = {
      offMs: await startupMs(compiled, production),
      tracingMs: await startupMs(compiled, { ...production, OTEL_EXPORTER_OTLP_ENDPOINT: 'http://127.0.0.1:9' }),
    };
    const checks = [
      { goal: 'GET /user read a live session throughout', value: `${readersStillIn.length} of ${readers.length}`, pass: readersStillIn.length === readers.length },
      { goal: 'GET /user >= 1.4x tutorial', value: ratios.userVsTutorial, pass: (ratios.userVsTutorial ?? 0) >= 1.4 },
      { goal: 'GET /user >= 0.75x bare Express', value: ratios.userVsBare, pass: (ratios.userVsBare ?? 0) >= 0.75 },
      // every request timed and labelled, and its store read timed: 26 to 44 µs of CPU a request in two full runs
      // (0.95x and 0.89x)
      { goal: 'GET /user with METRICS_PORT >= 0.85x without', value: ratios.metricsUserVsUser, pass: (ratios.metricsUserVsUser ?? 0) >= 0.85 },
      // a login now also indexes its session and draws a tagged ID (issue 12 asks 1.1x; the cross-site work asked 1.25x)
      { goal: 'POST /login >= 1.1x tutorial', value: ratios.loginVsTutorial, pass: (ratios.loginVsTutorial ?? 0) >= 1.1 },
      // every read also checks the revocation stamps, in the same round trip
      { goal: 'Redis GET /user >= 0.8x memory', value: ratios.redisUserVsMemoryUser, pass: ratios.redisUserVsMemoryUser === null ? null : ratios.redisUserVsMemoryUser >= 0.8 },
      // Sentinel sends the same commands on one connection as a plain client does. A cluster read is one MGET in
      // the user's slot, but the cluster client routes every command by slot (more CPU per command than a plain
      // client's), and here its six redis-servers share the two cores with the server and the load generator
      ...([
        ['sentinel', ratios.sentinelUserVsRedisUser, 0.8],
        ['cluster', ratios.clusterUserVsRedisUser, 0.7],
      ] as const).map(([kind, value, floor]) => ({ goal: `${kind} GET /user >= ${floor}x single Redis`, value, pass: value === null ? null : value >= floor })),
      ...failovers.flatMap((f) => [
        {
          goal: `failover (${f.topology}): only 503s, none slower than 5 s, no other 5xx, no wrong user`,
          value: `${f.count503} 503s, ${f.other5xx} other 5xx, ${f.failedOrSlow} failed or slow, ${f.wrongAnswers} wrong`,
          pass: f.other5xx === 0 && f.failedOrSlow === 0 && f.wrongAnswers === 0,
        },
        { goal: `failover (${f.topology}): every session from before the kill readable after`, value: `${f.readableAfter} of ${f.sessions}`, pass: f.readableAfter === f.sessions },
        { goal: `failover (${f.topology}): every request succeeds again within 10 s of the kill`, value: `${f.recoveredAtMs} ms`, pass: f.recoveredAtMs < 10_000 },
      ]),
      { goal: 'flood: RSS < 160 MB (SESSION_MEMORY_MAX=20000)', value: ours.rssPeakMb, pass: ours.rssPeakMb < 160 },
      { goal: 'flood: logged-in user all 2xx, p99 < 250 ms', value: ours.user.p99, pass: ours.user.errors === 0 && ours.user.non2xx === 0 && ours.user.p99 < 250 },
      // what a refused login used to cost was the log itself (two lines, 2.2 KB, two stacks): bytes per request, not
      // throughput, which a 2-core machine writing ordinary request lines moves by 10 to 25 % from run to run. A
      // login writes its request line and its session_created audit line, about 200 bytes each, and no stack
      { goal: 'flood at LOG_LEVEL=info: < 600 bytes of log per login', value: logBytesPerLogin(logged), pass: logBytesPerLogin(logged) < 600 },
      { goal: 'full store, steady expiries: resident user all 2xx, p99 < 50 ms', value: expiring.steady.userP99, pass: expiring.user.errors === 0 && expiring.user.non2xx === 0 && expiring.steady.userP99 < 50 },
    ];

    const rows = [['scenario', 'server', 'req/s', 'p50 ms', 'p99 ms', 'errors', 'non-2xx', 'CPU us/req']];
    for (const scenario of scenarios) {
      for (const [target, f] of Object.entries(results[scenario.name] ?? {})) {
        rows.push([scenario.name, target, String(f.rps), String(f.p50), String(f.p99), String(f.errors), String(f.non2xx), String(f.cpuUsPerRequest ?? 'n/a')]);
      }
    }
    console.log(`\n${table(rows)}\n`);
    console.log(table([['ratio', 'value'], ...Object.entries(ratios).map(([k, v]) => [k, v === null ? 'n/a' : `${v}x`])]));
    console.log('');
    console.log(
      table([
        ['flood', 'log', 'logins/s', 'created', '503s', 'log MB', 'RSS before', 'RSS peak', 'RSS after', 'user p50', 'user p99', 'user max', 'user non-2xx+errors'],
        ...floods.map((f) => [
          f.server,
          f.logLevel,
          String(f.loginsPerSecond),
          String(f.created),
          String(f.refused503),
          String(f.logMb),
          `${f.rssBeforeMb} MB`,
          `${f.rssPeakMb} MB`,
          `${f.rssAfterMb} MB`,
          `${f.user.p50} ms`,
          `${f.user.p99} ms`,
          `${f.user.max} ms`,
          String(f.user.non2xx + f.user.errors),
        ]),
      ]),
    );
    console.log('');
    if (failovers.length > 0) {
      console.log(
        table([
          ['failover', 'sessions', 'on killed', 'requests', 'first 503', 'last 503', '503s', 'other 5xx', 'failed/slow', 'all OK from', 'readable after', 'logins during'],
          ...failovers.map((f) => [
            f.topology,
            String(f.sessions),
            String(f.onKilledPrimary),
            String(f.requests),
            f.first503AtMs === null ? '-' : `${f.first503AtMs} ms`,
            f.last503AtMs === null ? '-' : `${f.last503AtMs} ms`,
            String(f.count503),
            String(f.other5xx),
            String(f.failedOrSlow),
            `${f.recoveredAtMs} ms`,
            `${f.readableAfter} of ${f.sessions}`,
            String(f.loginsDuring),
          ]),
        ]),
      );
      console.log('');
    }
    printExpiring(expiring);
    console.log(`\nstart-up to listening: ${startup.offMs} ms, ${startup.tracingMs} ms with tracing on\n`);
    for (const check of checks) console.log(`${check.pass === null ? 'SKIP' : check.pass ? 'PASS' : 'FAIL'}  ${check.goal}: ${check.value ?? 'n/a'}`);
    if (quick) console.log('(quick run: figures from 1 s runs are indicative only)');

    const report = {
      date: new Date().toISOString(),
      quick,
      machine: { cpus: os.cpus().length, model: os.cpus()[0]?.model ?? 'unknown', memoryGb: Math.round(os.totalmem() / 2 ** 30), node: process.version, platform: `${os.platform()} ${os.release()}` },
      settings: { rounds: ROUNDS, secondsPerRun: SECONDS, warmupSeconds: WARMUP_SECONDS, connections: CONNECTIONS, floodSeconds: FLOOD_SECONDS, ours: path.relative(ROOT, OURS) },
      rounds,
      results,
      ratios,
      failovers,
      floods,
      expiring,
      startup,
      checks,
      notes,
    };
    mkdirSync(path.dirname(OUT), { recursive: true });
    writeFileSync(OUT, `${JSON.stringify(report, null, 2)}\n`);
    console.log(`\nwrote ${path.relative(process.cwd(), OUT)}`);
  } finally {
    await Promise.all(servers.map(stopServer));
    await redis?.stop();
    await sentinel?.stop();
    await cluster?.stop();
  }
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
