// Real processes for the tests and the benchmark: free ports, the server's entry point, redis-server and its
// Sentinel and Cluster topologies. No jest globals here, so the benchmark can use it too.
import { spawn, spawnSync, type ChildProcess, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import net, { type AddressInfo } from 'node:net';
import path from 'node:path';

export const ROOT = path.join(__dirname, '..');

export const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

export async function freePort(): Promise<number> {
  const server = net.createServer();
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address() as AddressInfo;
  await new Promise((resolve) => server.close(resolve));
  return port;
}

/** a plain TCP connection to a server on loopback, collecting whatever it answers */
export async function rawConnection(port: number): Promise<net.Socket & { response(): string }> {
  const socket = net.connect(port, '127.0.0.1');
  let response = '';
  socket.on('data', (chunk: Buffer) => (response += chunk.toString()));
  await once(socket, 'connect');
  return Object.assign(socket, { response: () => response });
}

/** whether a program is on the PATH (or, given a path, executable there) */
export function installed(program: string): boolean {
  return spawnSync('sh', ['-c', `command -v ${program}`]).status === 0;
}

/** the TCP ports process `pid` listens on, with their addresses (IPv4 dotted, IPv6 as Linux prints it), from /proc */
export function listeningSockets(pid: number): string[] {
  const inodes = new Set<string>();
  for (const fd of readdirSync(`/proc/${pid}/fd`)) {
    try {
      const match = /^socket:\[(\d+)\]$/.exec(readlinkSync(`/proc/${pid}/fd/${fd}`));
      if (match) inodes.add(match[1]!);
    } catch {
      // closed while we looked
    }
  }
  const sockets: string[] = [];
  for (const table of ['tcp', 'tcp6']) {
    for (const row of readFileSync(`/proc/${pid}/net/${table}`, 'utf8').trim().split('\n').slice(1)) {
      const [, local = '', , state, , , , , , inode = ''] = row.trim().split(/\s+/);
      // 0A: LISTEN
      if (state !== '0A' || !inodes.has(inode)) continue;
      const [address = '', port = ''] = local.split(':');
      const host = table === 'tcp' ? (address.match(/../g) ?? []).reverse().map((byte) => parseInt(byte, 16)).join('.') : address;
      sockets.push(`${host}:${parseInt(port, 16)}`);
    }
  }
  return sockets.sort();
}

export interface Run {
  child: ChildProcessWithoutNullStreams;
  /** what it printed, stdout and stderr: the first MiB */
  output: () => string;
  /** how many bytes it printed in all */
  bytes: () => number;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null; afterMs: number }>;
}

const MAX_KEPT_OUTPUT = 2 ** 20;

/** `node ARGS` in the project's folder with only PATH and `env`: a developer's own .env or shell must not leak in */
export function spawnNode(args: string[], env: Record<string, string>): Run {
  const started = Date.now();
  const child = spawn(process.execPath, args, { cwd: ROOT, env: { PATH: process.env.PATH ?? '', ...env } });
  let output = '';
  let bytes = 0;
  // a server logging at info under load prints megabytes: count them, keep the start (where start-up speaks)
  const keep = (chunk: Buffer) => {
    bytes += chunk.length;
    if (output.length < MAX_KEPT_OUTPUT) output += chunk.toString();
  };
  child.stdout.on('data', keep);
  child.stderr.on('data', keep);
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null; afterMs: number }>((resolve) =>
    child.on('exit', (code, signal) => resolve({ code, signal, afterMs: Date.now() - started })),
  );
  return { child, output: () => output, bytes: () => bytes, exited };
}

/** waits for the start-up line ("Server listening at http://localhost:PORT"); resolves with its port */
export async function listening(run: Run): Promise<number> {
  for (let waited = 0; waited < 20_000; waited += 50) {
    const match = /Server listening at http:\/\/localhost:(\d+)/.exec(run.output());
    if (match) return Number(match[1]);
    if (run.child.exitCode !== null) break;
    await sleep(50);
  }
  throw new Error(`server did not start:\n${run.output()}`);
}

// every redis-server a test or the benchmark started, killed when the process leaves even if a stop was missed
const started = new Set<ChildProcess>();
process.on('exit', () => {
  for (const child of started) if (child.exitCode === null) child.kill('SIGKILL');
});

/** redis-server with `args`, resolved once it prints `ready` (killed when this process exits) */
// what each redis-server printed, for a message when a topology does not do what a test waits for
const logs = new WeakMap<ChildProcess, () => string>();

/** the last `lines` lines a redis-server printed */
function lastLines(child: ChildProcess | undefined, lines = 40): string {
  return (child ? (logs.get(child)?.() ?? '') : '').trimEnd().split('\n').slice(-lines).join('\n');
}

async function spawnRedis(args: string[], ready: RegExp, cwd?: string): Promise<ChildProcess> {
  const child = spawn('redis-server', args, { stdio: ['ignore', 'pipe', 'pipe'], cwd });
  started.add(child);
  child.on('exit', () => started.delete(child));
  let output = '';
  logs.set(child, () => output);
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`redis-server did not start:\n${output}`));
    }, 10_000);
    child.stdout?.on('data', (chunk: Buffer) => {
      output += chunk.toString();
      if (ready.test(output)) {
        clearTimeout(timer);
        resolve();
      }
    });
    child.on('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`redis-server exited with ${code}:\n${output}`));
    });
  });
  return child;
}

const NO_PERSISTENCE = ['--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'];
const READY = /Ready to accept connections/;

async function kill(child: ChildProcess | undefined, signal: NodeJS.Signals = 'SIGKILL'): Promise<void> {
  if (!child || child.exitCode !== null || child.signalCode !== null) return;
  const exit = once(child, 'exit');
  child.kill(signal);
  await exit;
}

/** A real redis-server of its own on a free loopback port, with no persistence; stop() and start() again. */
export class RedisServer {
  private process?: ChildProcess;

  private constructor(readonly port: number) {}

  static async start(): Promise<RedisServer> {
    const server = new RedisServer(await freePort());
    await server.start();
    return server;
  }

  get url(): string {
    return `redis://127.0.0.1:${this.port}`;
  }

  async start(): Promise<void> {
    this.process = await spawnRedis(['--port', String(this.port), ...NO_PERSISTENCE], READY);
  }

  /** freezes it (SIGSTOP): connections stay open, nothing answers */
  pause(): void {
    this.process?.kill('SIGSTOP');
  }

  resume(): void {
    this.process?.kill('SIGCONT');
  }

  /** kills it outright, as a crash would */
  async stop(): Promise<void> {
    await kill(this.process);
  }
}

/** a redis-server with extra `args` on `port`, in a temporary folder of its own (removed by stop()) */
export async function startRedisNode(args: string[], port: number): Promise<{ stop(): Promise<void> }> {
  const dir = mkdtempSync(path.join(tmpdir(), 'redis-'));
  const child = await spawnRedis(['--port', String(port), ...NO_PERSISTENCE, '--dir', dir, ...args], READY).catch((err: unknown) => {
    rmSync(dir, { recursive: true, force: true });
    throw err;
  });
  return {
    async stop() {
      await kill(child);
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** what `redis-cli ARGS` printed; throws when it fails */
export async function redisCli(args: string[]): Promise<string> {
  const child = spawn('redis-cli', args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  child.stdout.on('data', (chunk: Buffer) => (output += chunk.toString()));
  child.stderr.on('data', (chunk: Buffer) => (output += chunk.toString()));
  // 'close', not 'exit': the output is all read only once the streams close
  const [code] = (await once(child, 'close')) as [number | null];
  if (code !== 0) throw new Error(`redis-cli ${args.join(' ')} exited with ${code}:\n${output}`);
  return output;
}

/** waits until `check` holds, polling; throws what it last saw after `ms` */
export async function until(what: string, check: () => Promise<boolean>, ms = 20_000): Promise<void> {
  const deadline = Date.now() + ms;
  let last: unknown;
  while (Date.now() < deadline) {
    try {
      if (await check()) return;
    } catch (err) {
      last = err;
    }
    await sleep(100);
  }
  throw new Error(`timed out waiting for ${what}${last ? `: ${String(last)}` : ''}`);
}

const offset = (info: string, field: string): number => Number(new RegExp(`${field}:(\\d+)`).exec(info)?.[1] ?? -1);

/** waits until the replica on `replica` has every write its primary on `primary` had when this was called */
export async function replicated(primary: number, replica: number): Promise<void> {
  const target = offset(await redisCli(['-p', String(primary), 'INFO', 'replication']), 'master_repl_offset');
  await until(`the replica on ${replica} to catch up with ${primary}`, async () => {
    return offset(await redisCli(['-p', String(replica), 'INFO', 'replication']), 'slave_repl_offset') >= target;
  });
}

/** `topology` once `boot` has run; when it fails, whatever it had started is stopped */
async function booted<T extends { stop(): Promise<void> }>(topology: T, boot: () => Promise<void>): Promise<T> {
  try {
    await boot();
  } catch (err) {
    await topology.stop();
    throw err;
  }
  return topology;
}

/** one data node of a topology: its port and process */
export interface RedisNode {
  port: number;
  process: ChildProcess | undefined;
}

const address = (port: number) => `127.0.0.1:${port}`;

/**
 * A primary, a replica and three sentinels on free loopback ports, in a temporary folder of their own (sentinels
 * rewrite their configuration file). Fails over in 2 to 3 s: `down-after-milliseconds` 1000, `failover-timeout` 10000.
 */
export class SentinelTopology {
  static readonly NAME = 'mymaster';
  readonly data: RedisNode[] = [];
  readonly sentinels: RedisNode[] = [];

  private constructor(readonly dir: string) {}

  static async start(): Promise<SentinelTopology> {
    const topology = new SentinelTopology(mkdtempSync(path.join(tmpdir(), 'sentinel-')));
    return booted(topology, () => topology.boot());
  }

  private async boot(): Promise<void> {
    const primary = await freePort();
    this.data.push({ port: primary, process: await spawnRedis(this.dataArgs(primary), READY) });
    const replica = await freePort();
    this.data.push({ port: replica, process: await spawnRedis([...this.dataArgs(replica), '--replicaof', '127.0.0.1', String(primary)], READY) });
    for (let i = 0; i < 3; i++) {
      const port = await freePort();
      const file = path.join(this.dir, `sentinel-${port}.conf`);
      writeFileSync(
        file,
        [
          `port ${port}`,
          'bind 127.0.0.1',
          `dir ${this.dir}`,
          `sentinel monitor ${SentinelTopology.NAME} 127.0.0.1 ${primary} 2`,
          `sentinel down-after-milliseconds ${SentinelTopology.NAME} 1000`,
          // long enough for a promotion on a machine the whole suite keeps busy (3 s was not, now and then)
          `sentinel failover-timeout ${SentinelTopology.NAME} 10000`,
          `sentinel parallel-syncs ${SentinelTopology.NAME} 1`,
          '',
        ].join('\n'),
      );
      this.sentinels.push({ port, process: await spawnRedis([file, '--sentinel'], /\+monitor master/) });
    }
    // failover needs each sentinel to know the replica and the other two sentinels
    await until('the sentinels to know the replica and each other', async () => {
      for (const sentinel of this.sentinels) {
        const replicas = await redisCli(['-p', String(sentinel.port), 'SENTINEL', 'REPLICAS', SentinelTopology.NAME]);
        const peers = await redisCli(['-p', String(sentinel.port), 'SENTINEL', 'SENTINELS', SentinelTopology.NAME]);
        if (!replicas.includes(String(this.data[1]!.port)) || peers.split('\n').filter((line) => line === 'runid').length < 2) return false;
      }
      return (await redisCli(['-p', String(replica), 'INFO', 'replication'])).includes('master_link_status:up');
    });
  }

  // a replica keeps the copy a full sync sends it on disk, in its --dir: the topology's folder, not the project's
  private dataArgs(port: number): string[] {
    return ['--port', String(port), ...NO_PERSISTENCE, '--dir', this.dir, '--dbfilename', `dump-${port}.rdb`, '--repl-diskless-sync-delay', '0'];
  }

  /** `host:port,...` of the sentinels, as REDIS_SENTINELS takes them */
  get sentinelList(): string {
    return this.sentinels.map((node) => address(node.port)).join(',');
  }

  /** the port of the primary the sentinels name now */
  async primaryPort(): Promise<number> {
    const reply = await redisCli(['-p', String(this.sentinels[0]!.port), 'SENTINEL', 'GET-MASTER-ADDR-BY-NAME', SentinelTopology.NAME]);
    return Number(reply.trim().split('\n')[1]);
  }

  /** waits until the replica holds every write the primary has now */
  async synced(): Promise<void> {
    const primary = await this.primaryPort();
    const replicas = this.data.filter((node) => node.port !== primary && node.process?.exitCode === null && node.process.signalCode === null);
    await Promise.all(replicas.map((node) => replicated(primary, node.port)));
  }

  /** kill -9 of the primary; resolves with its port */
  async killPrimary(): Promise<number> {
    const port = await this.primaryPort();
    await kill(this.data.find((node) => node.port === port)?.process);
    return port;
  }

  /** waits until the sentinels name a primary other than `old`, which answers as one */
  async failedOver(old: number, ms = 20_000): Promise<number> {
    let now = old;
    await until('the sentinels to promote the replica', async () => {
      now = await this.primaryPort();
      return now !== old && (await redisCli(['-p', String(now), 'ROLE'])).startsWith('master');
    }, ms);
    return now;
  }

  /**
   * A planned switch of primaries (SENTINEL FAILOVER); resolves with the new primary's port. Asked again until it
   * happens: a sentinel refuses while it still counts an earlier failover, and answers OK but then aborts
   * (-failover-abort-no-good-slave) when its last look at the replica was not fresh enough.
   */
  async switchover(): Promise<number> {
    const old = await this.primaryPort();
    const deadline = Date.now() + 75_000;
    for (;;) {
      const reply = await redisCli(['-p', String(this.sentinels[0]!.port), 'SENTINEL', 'FAILOVER', SentinelTopology.NAME]);
      if (reply.trim() === 'OK') {
        try {
          return await this.failedOver(old, 15_000);
        } catch (err) {
          if (Date.now() > deadline) throw new Error(`${(err as Error).message}; the first sentinel's log:\n${lastLines(this.sentinels[0]?.process)}`, { cause: err });
        }
      } else if (Date.now() > deadline) {
        throw new Error(`the sentinels would not switch primaries: ${reply.trim()}`);
      } else {
        await sleep(250);
      }
    }
  }

  /** starts the killed node again on its port (it comes back as a replica, as the sentinels reconfigure it) */
  async restart(port: number): Promise<void> {
    const node = this.data.find((candidate) => candidate.port === port)!;
    node.process = await spawnRedis(this.dataArgs(port), READY);
  }

  async stop(): Promise<void> {
    await Promise.all([...this.sentinels, ...this.data].map((node) => kill(node.process)));
    rmSync(this.dir, { recursive: true, force: true });
  }
}

/**
 * Redis Cluster: three primaries and three replicas on free loopback ports, in a temporary folder of their own (each
 * node writes its nodes.conf). `cluster-node-timeout` 1000: a replica takes over a dead primary in 2 to 3 s.
 */
export class ClusterTopology {
  readonly nodes: RedisNode[] = [];

  private constructor(readonly dir: string) {}

  static async start(): Promise<ClusterTopology> {
    const topology = new ClusterTopology(mkdtempSync(path.join(tmpdir(), 'cluster-')));
    return booted(topology, () => topology.boot());
  }

  // the cluster bus gets a free port of its own (by default it is the port + 10000, which may be taken)
  private async args(port: number): Promise<string[]> {
    return [
      '--port', String(port), ...NO_PERSISTENCE, '--dir', this.dir, '--dbfilename', `dump-${port}.rdb`,
      '--cluster-enabled', 'yes', '--cluster-config-file', `nodes-${port}.conf`, '--cluster-node-timeout', '1000',
      '--cluster-port', String(await freePort()), '--repl-diskless-sync-delay', '0',
    ];
  }

  private async boot(): Promise<void> {
    const ports: number[] = [];
    // one at a time, each in `nodes` as soon as it runs, so that stop() finds every one that started
    for (let i = 0; i < 6; i++) {
      const port = await freePort();
      ports.push(port);
      this.nodes.push({ port, process: await spawnRedis(await this.args(port), READY) });
    }
    await redisCli(['--cluster', 'create', ...ports.map(address), '--cluster-replicas', '1', '--cluster-yes']);
    await until('the cluster to cover every slot, with a synced replica for each primary', async () => {
      const roles = await Promise.all(ports.map((port) => redisCli(['-p', String(port), 'INFO', 'replication'])));
      const states = await Promise.all(ports.map((port) => redisCli(['-p', String(port), 'CLUSTER', 'INFO'])));
      const synced = roles.filter((role) => role.includes('master_link_status:up')).length;
      return synced === 3 && states.every((state) => state.includes('cluster_state:ok'));
    });
  }

  /** `host:port,...` of every node, as REDIS_CLUSTER_NODES takes them */
  get nodeList(): string {
    return this.nodes.map((node) => address(node.port)).join(',');
  }

  /** the live primaries, by port, with the slot ranges each serves */
  async primaries(): Promise<Map<number, [number, number][]>> {
    const live = this.nodes.find((node) => node.process && node.process.exitCode === null && node.process.signalCode === null)!;
    const lines = (await redisCli(['-p', String(live.port), 'CLUSTER', 'NODES'])).trim().split('\n');
    const primaries = new Map<number, [number, number][]>();
    for (const line of lines) {
      const [, addr = '', flags = '', , , , , state, ...slots] = line.split(' ');
      if (!flags.includes('master') || flags.includes('fail') || state !== 'connected' || slots.length === 0) continue;
      const port = Number(addr.split('@')[0]!.split(':')[1]);
      primaries.set(port, slots.map((range) => range.split('-').map(Number) as [number, number]).map(([from, to]) => [from, to ?? from]));
    }
    return primaries;
  }

  /** waits until each replica holds every write its primary has now */
  async synced(): Promise<void> {
    const lines = (await redisCli(['-p', String(this.nodes[0]!.port), 'CLUSTER', 'NODES'])).trim().split('\n').map((line) => line.split(' '));
    const portOf = (field = '') => Number(field.split('@')[0]!.split(':')[1]);
    const byId = new Map(lines.map((fields) => [fields[0], portOf(fields[1])]));
    const pairs = lines
      .filter((fields) => fields[2]?.includes('slave') && !fields[2].includes('fail') && fields[7] === 'connected')
      .map((fields) => [byId.get(fields[3]), portOf(fields[1])] as const);
    await Promise.all(pairs.map(([primary, replica]) => (primary ? replicated(primary, replica) : undefined)));
  }

  /** the port of the primary serving `key` */
  async primaryOf(key: string): Promise<number> {
    const slot = Number((await redisCli(['-p', String(this.nodes[0]!.port), 'CLUSTER', 'KEYSLOT', key])).trim());
    for (const [port, ranges] of await this.primaries()) {
      if (ranges.some(([from, to]) => slot >= from && slot <= to)) return port;
    }
    throw new Error(`no primary serves slot ${slot}`);
  }

  /** freezes the node on `port` (SIGSTOP): its connections stay open and nothing answers; thaw() undoes it */
  freeze(port: number): void {
    this.nodes.find((node) => node.port === port)?.process?.kill('SIGSTOP');
  }

  thaw(port: number): void {
    this.nodes.find((node) => node.port === port)?.process?.kill('SIGCONT');
  }

  /** kill -9 of the node on `port` */
  async kill(port: number): Promise<void> {
    await kill(this.nodes.find((node) => node.port === port)?.process);
  }

  /** waits until every slot is served again, by primaries other than the dead one; resolves with them */
  async healed(dead: number): Promise<Map<number, [number, number][]>> {
    let primaries = new Map<number, [number, number][]>();
    await until('a replica to take over every slot of the dead primary', async () => {
      primaries = await this.primaries();
      const covered = [...primaries.values()].flat().reduce((sum, [from, to]) => sum + to - from + 1, 0);
      return !primaries.has(dead) && covered === 16384;
    });
    return primaries;
  }

  async stop(): Promise<void> {
    await Promise.all(this.nodes.map((node) => kill(node.process)));
    rmSync(this.dir, { recursive: true, force: true });
  }
}
