// Every error reply Redis gives while it fails over, reshards or runs short is the store-unavailable 503, on one
// Redis and on a cluster, never a 500. Redis cannot be made to give most of them on demand, so a server of the
// test's own speaks just enough RESP on a real socket: the store, its client and the app are the real ones.
import { once } from 'node:events';
import net, { type AddressInfo } from 'node:net';
import pino from 'pino';
import request from 'supertest';
import { createApp } from '../src/app';
import { DEVELOPMENT_SECRET } from '../src/config';
import { createSessionStore } from '../src/stores';
import type { SessionStore } from '../src/stores/types';
import { testConfig, signedCookieHeader } from './helpers';

const bulk = (text: string) => `$${Buffer.byteLength(text)}\r\n${text}\r\n`;

/**
 * A TCP server that answers the client's handshake (CLIENT SETINFO), and as a one-node cluster (CLUSTER SLOTS, CLUSTER
 * INFO) when asked, and every other command with the error reply `reply`. Commands arrive as RESP arrays of bulk strings.
 */
async function erringRedis(reply: string): Promise<{ port: number; commands: string[][]; close(): Promise<void> }> {
  const commands: string[][] = [];
  const sockets = new Set<net.Socket>();
  const server = net.createServer((socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    let buffered = '';
    socket.on('data', (chunk) => {
      buffered += chunk.toString('latin1');
      for (let parsed = parse(buffered); parsed; parsed = parse(buffered)) {
        buffered = buffered.slice(parsed.length);
        commands.push(parsed.args);
        socket.write(answer(parsed.args));
      }
    });
  });
  const answer = ([name = '', sub = '']: string[]): string => {
    const command = `${name} ${sub}`.toUpperCase();
    if (command.startsWith('CLIENT ')) return '+OK\r\n';
    if (command === 'CLUSTER SLOTS') return `*1\r\n*3\r\n:0\r\n:16383\r\n*3\r\n${bulk('127.0.0.1')}:${port}\r\n${bulk('f'.repeat(40))}`;
    if (command === 'CLUSTER INFO') return bulk('cluster_state:ok\r\ncluster_slots_ok:16384\r\n');
    return `-${reply.replace('127.0.0.1:1', `127.0.0.1:${port}`)}\r\n`;
  };
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address() as AddressInfo;
  return {
    port,
    commands,
    close: async () => {
      for (const socket of sockets) socket.destroy();
      await new Promise((resolve) => server.close(resolve));
    },
  };
}

/** one command off the front of `text`: `*N` then N `$len` bulk strings; undefined until all of it has arrived */
function parse(text: string): { args: string[]; length: number } | undefined {
  const head = /^\*(\d+)\r\n/.exec(text);
  if (!head) return undefined;
  let at = head[0].length;
  const args: string[] = [];
  for (let i = 0; i < Number(head[1]); i++) {
    const size = /^\$(\d+)\r\n/.exec(text.slice(at));
    if (!size) return undefined;
    at += size[0].length;
    if (text.length < at + Number(size[1]) + 2) return undefined;
    args.push(text.slice(at, at + Number(size[1])));
    at += Number(size[1]) + 2;
  }
  return { args, length: at };
}

const REPLIES = [
  'CLUSTERDOWN The cluster is down',
  "READONLY You can't write against a read only replica.",
  'TRYAGAIN Multiple keys request during rehashing of slot',
  'LOADING Redis is loading the dataset in memory',
  'NOREPLICAS Not enough good replicas to write.',
  'MASTERDOWN Link with MASTER is down and replica-serve-stale-data is set to no.',
  'OOM command not allowed when used memory > maxmemory.',
  'BUSY Redis is busy running a script. You can only call SCRIPT KILL or SHUTDOWN NOSCRIPT.',
  // on one Redis a MOVED is an error like any other; on a cluster it is followed (here to the same node, whose
  // address the server puts in) until the client's redirection limit gives up
  'MOVED 3999 127.0.0.1:1',
  'ASK 3999 127.0.0.1:1',
];

const shouldBeStoreUnavailable = (res: request.Response) => {
  expect(res.status).toBe(503);
  expect(res.body).toEqual({ error: expect.stringMatching(/unavailable/i) });
  expect(res.headers['retry-after']).toMatch(/^\d+$/);
  expect(res.text).not.toMatch(/at .*\.(js|ts):\d+|node_modules/);
};

describe.each(['one Redis', 'a Redis Cluster'])('error replies from %s', (topology) => {
  describe.each(REPLIES)('%s', (reply) => {
    let server: Awaited<ReturnType<typeof erringRedis>>;
    let sessions: SessionStore;
    let app: ReturnType<typeof createApp>;

    beforeAll(async () => {
      server = await erringRedis(reply);
      const where = topology === 'one Redis' ? { REDIS_URL: `redis://127.0.0.1:${server.port}` } : { REDIS_CLUSTER_NODES: `127.0.0.1:${server.port}` };
      const config = testConfig({ SESSION_STORE: 'redis', LOGIN_RATE_LIMIT_PER_MINUTE: '20', ...where });
      sessions = await createSessionStore(config, pino({ level: 'silent' }));
      await sessions.ready();
      app = createApp({ config, store: sessions.store, rateLimitStore: sessions.rateLimitStore?.() });
    });

    afterAll(async () => {
      await sessions?.close();
      await server?.close();
    });

    /** the request's answer, checked to come from the reply: the server saw the request's commands, and answered well before the 2 s deadline */
    async function answered(send: () => request.Test): Promise<request.Response> {
      const before = server.commands.length;
      const started = Date.now();
      const res = await send();
      expect(Date.now() - started).toBeLessThan(1000);
      expect(server.commands.slice(before).some(([name = '']) => !['CLIENT', 'CLUSTER'].includes(name.toUpperCase()))).toBe(true);
      return res;
    }

    it('when a session is read, then the store-unavailable 503', async () => {
      const cookie = signedCookieHeader(`${'A'.repeat(22)}${'b'.repeat(32)}`, DEVELOPMENT_SECRET);
      shouldBeStoreUnavailable(await answered(() => request(app).get('/user').set('Cookie', cookie)));
    });

    it('when someone logs in (the login limit counts first), then the store-unavailable 503', async () => {
      shouldBeStoreUnavailable(await answered(() => request(app).post('/login?name=daniel')));
    });

    it('when /healthz is asked, then 503', async () => {
      const res = await answered(() => request(app).get('/healthz'));
      expect(res.status).toBe(503);
      expect(res.body).toEqual({ status: 'unavailable' });
    });
  });
});
