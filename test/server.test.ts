import { once } from 'node:events';
import http from 'node:http';
import { freePort, listening, rawConnection, runCollection, sleep, startServer, type Run } from './helpers';

describe('the server process', () => {
  const runs: Run[] = [];
  afterEach(() => runs.splice(0).forEach((run) => run.child.exitCode === null && run.child.kill('SIGKILL')));
  const start = (env: Record<string, string>) => {
    const run = startServer(env);
    runs.push(run);
    return run;
  };

  /** the server, and a connection to it that has sent half a request head: the server is mid-request */
  async function midRequest(): Promise<{ run: Run; socket: Awaited<ReturnType<typeof rawConnection>> }> {
    const run = start({ APPLICATION_PORT: String(await freePort()) });
    const socket = await rawConnection(await listening(run));
    socket.write('GET /user HTTP/1.1\r\nHost: localhost\r\n');
    await sleep(200);
    return { run, socket };
  }

  it('when a value is invalid, then it exits non-zero before listening, naming every bad variable', async () => {
    const run = start({ APPLICATION_PORT: 'abc', LOG_LEVEL: 'loud' });

    const { code } = await run.exited;

    expect(code).toBe(1);
    expect(run.output()).toMatch(/APPLICATION_PORT/);
    expect(run.output()).toMatch(/LOG_LEVEL/);
    expect(run.output()).not.toMatch(/Server listening/);
  });

  it.each([
    ['missing', {}],
    ['too short', { SESSION_SECRET: 'short' }],
    ["the tutorial's fallback", { SESSION_SECRET: '8unto0n4oc7903zm' }],
  ])('when in production the secret is %s, then it exits non-zero naming SESSION_SECRET', async (_what, env) => {
    const run = start({ NODE_ENV: 'production', ...env });

    const { code } = await run.exited;

    expect(code).toBe(1);
    expect(run.output()).toMatch(/SESSION_SECRET/);
  });

  it('when a full memory store would not fit the heap, then it starts and warns, naming SESSION_MEMORY_MAX and the flag', async () => {
    const run = start({ APPLICATION_PORT: String(await freePort()), LOG_LEVEL: 'warn', SESSION_MEMORY_MAX: '100000000' });

    await listening(run);

    expect(run.output()).toMatch(/SESSION_MEMORY_MAX=100000000 sessions may need \d+ MB of heap.*--max-old-space-size=\d+/);
  });

  it('when started, then it prints the tutorial\'s line, serves the Postman collection, and exits 0 on SIGTERM', async () => {
    const run = start({ APPLICATION_PORT: String(await freePort()) });
    const port = await listening(run);

    const summary = await runCollection(`http://localhost:${port}`);
    // a client that keeps its connection open must not hold the shutdown up
    const agent = new http.Agent({ keepAlive: true });
    await new Promise((resolve) => http.get({ port, path: '/healthz', agent }, (res) => res.resume().on('end', resolve)));
    const signalled = Date.now();
    run.child.kill('SIGTERM');
    const { code } = await run.exited;

    expect(summary.run.failures).toEqual([]);
    expect(code).toBe(0);
    expect(Date.now() - signalled).toBeLessThan(10_000);
    agent.destroy();
  });

  it('when a request is in flight at SIGINT, then it is answered before the process exits 0', async () => {
    const { run, socket } = await midRequest();

    const signalled = Date.now();
    run.child.kill('SIGINT');
    await sleep(300);
    socket.write('\r\n');
    const { code } = await run.exited;

    expect(socket.response()).toMatch(/^HTTP\/1\.1 200 OK/);
    expect(socket.response()).toContain('{"info":"No data present in session"}');
    expect(code).toBe(0);
    expect(Date.now() - signalled).toBeLessThan(10_000);
    socket.destroy();
  });

  it('when a client never finishes its request, then the grace period ends and the process still exits 0 within 10 s', async () => {
    // never completed: the connection is busy, so nothing closes it before the grace ends
    const { run, socket } = await midRequest();

    const signalled = Date.now();
    run.child.kill('SIGTERM');
    const { code } = await run.exited;
    const tookMs = Date.now() - signalled;

    expect(code).toBe(0);
    expect(tookMs).toBeGreaterThanOrEqual(7500);
    expect(tookMs).toBeLessThan(10_000);
    socket.destroy();
  });

  it.each([
    ['headers over 16 KB', `GET /user?name=${'a'.repeat(20_000)} HTTP/1.1\r\nHost: localhost\r\n\r\n`, 431, 'Request headers too large'],
    ['a broken request line', 'GARBAGE\r\n\r\n', 400, 'Bad request'],
  ])('when Node refuses a request with %s, then the answer is JSON too', async (_what, raw, status, error) => {
    const run = start({ APPLICATION_PORT: String(await freePort()) });
    const port = await listening(run);
    const socket = await rawConnection(port);

    socket.write(raw);
    await once(socket, 'close');
    const response = socket.response();

    expect(response).toMatch(new RegExp(`^HTTP/1\\.1 ${status} `));
    expect(response).toMatch(/content-type: application\/json/i);
    expect(response).toMatch(/x-request-id: [0-9a-f-]{36}\r\n/i);
    expect(JSON.parse(response.slice(response.indexOf('\r\n\r\n') + 4))).toEqual({ error });
  });

  it('when SESSION_STORE=redis and Redis cannot be reached, then it exits non-zero within 15 s naming Redis, password masked', async () => {
    const port = await freePort();
    const run = start({ SESSION_STORE: 'redis', REDIS_URL: `redis://:hunter2@127.0.0.1:${port}`, APPLICATION_PORT: String(await freePort()) });

    const { code, afterMs } = await run.exited;

    expect(code).not.toBe(0);
    expect(afterMs).toBeLessThan(15_000);
    expect(run.output()).toMatch(new RegExp(`Cannot reach Redis at redis://:\\*\\*\\*@127\\.0\\.0\\.1:${port}`));
    expect(run.output()).not.toContain('hunter2');
    expect(run.output()).not.toMatch(/Server listening/);
  });

  it.each([
    ['REDIS_SENTINELS', 'Redis Sentinel "mymaster" at'],
    ['REDIS_CLUSTER_NODES', 'Redis Cluster at'],
  ])('when %s names nodes that cannot be reached, then it exits non-zero within 15 s naming the variable and the nodes', async (variable, what) => {
    const nodes = `127.0.0.1:${await freePort()},127.0.0.1:${await freePort()}`;
    const run = start({ SESSION_STORE: 'redis', [variable]: nodes, REDIS_PASSWORD: 'hunter2', APPLICATION_PORT: String(await freePort()) });

    const { code, afterMs } = await run.exited;

    expect(code).not.toBe(0);
    expect(afterMs).toBeLessThan(15_000);
    expect(run.output()).toContain(`Cannot reach ${what} ${nodes} (${variable})`);
    expect(run.output()).not.toContain('hunter2');
    expect(run.output()).not.toMatch(/Server listening/);
  });
});
