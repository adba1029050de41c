import { spawn, spawnSync, type ChildProcess, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { once } from 'node:events';
import type { AddressInfo } from 'node:net';
import net from 'node:net';
import type { Server } from 'node:http';
import type { Express } from 'express';
import path from 'node:path';
import newman, { type NewmanRunSummary } from 'newman';
import type { Response } from 'supertest';
import { createApp } from '../src/app';
import { loadConfig, type Config, type Env } from '../src/config';
import { BoundedMemoryStore } from '../src/memory-store';
import { createExpiryRule } from '../src/session';

/** configuration as the server would read it, quiet and unthrottled unless a test says otherwise */
export function testConfig(env: Env = {}): Readonly<Config> {
  return loadConfig({ LOG_LEVEL: 'silent', LOGIN_RATE_LIMIT_PER_MINUTE: '0', ...env });
}

export function memoryStore(config: Readonly<Config>): BoundedMemoryStore {
  return new BoundedMemoryStore({
    max: config.sessionMemoryMax,
    expiresAt: createExpiryRule(config),
    pruneIntervalMs: 60_000,
  });
}

export interface TestApp {
  app: Express;
  config: Readonly<Config>;
  store: BoundedMemoryStore;
}

const stores: BoundedMemoryStore[] = [];
afterAll(() => stores.forEach((store) => store.close()));

/** the app on a bounded memory store, both built as the server builds them */
export function makeApp(env: Env = {}): TestApp {
  const config = testConfig(env);
  const store = memoryStore(config);
  stores.push(store);
  return { app: createApp({ config, store }), config, store };
}

export interface Cookie {
  name: string;
  value: string;
  /** attribute names lower-cased; flags map to true */
  attributes: Record<string, string | true>;
}

export function setCookies(res: Response): Cookie[] {
  const header = res.headers['set-cookie'] as unknown as string[] | undefined;
  return (header ?? []).map((line) => {
    const [pair = '', ...attributes] = line.split(';').map((part) => part.trim());
    const eq = pair.indexOf('=');
    return {
      name: pair.slice(0, eq),
      value: pair.slice(eq + 1),
      attributes: Object.fromEntries(
        attributes.map((attribute) => {
          const at = attribute.indexOf('=');
          return at === -1 ? [attribute.toLowerCase(), true] : [attribute.slice(0, at).toLowerCase(), attribute.slice(at + 1)];
        }),
      ),
    };
  });
}

/** the Set-Cookie for `name`, failing the test when there is none */
export function shouldSetCookie(res: Response, name = 'sid'): Cookie {
  const cookie = setCookies(res).find((c) => c.name === name);
  if (!cookie) throw new Error(`expected a Set-Cookie for ${name}, got ${JSON.stringify(res.headers['set-cookie'] ?? null)}`);
  return cookie;
}

export function shouldNotSetCookie(res: Response): void {
  expect(res.headers['set-cookie']).toBeUndefined();
}

/** the session ID inside a signed cookie value ("s:<id>.<signature>") */
export function sessionId(cookie: Cookie): string {
  const value = decodeURIComponent(cookie.value);
  const match = /^s:([^.]+)\./.exec(value);
  if (!match?.[1]) throw new Error(`not a signed session cookie: ${cookie.value}`);
  return match[1];
}

export function cookieHeader(cookie: Cookie): string {
  return `${cookie.name}=${cookie.value}`;
}

export const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/** the app on a real socket on a free port; close() stops it */
export async function listen(app: Express): Promise<{ url: string; port: number; server: Server; close(): Promise<void> }> {
  const server = app.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    port,
    server,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}

export async function freePort(): Promise<number> {
  const server = net.createServer();
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address() as AddressInfo;
  await new Promise((resolve) => server.close(resolve));
  return port;
}

/** whether a program is on the PATH */
export function installed(program: string): boolean {
  return spawnSync('sh', ['-c', `command -v ${program}`]).status === 0;
}

/**
 * `describe` when `program` is installed; otherwise the block is skipped with a visible message, and in CI
 * (CI=true) it fails instead, so a missing install step can never pass for green.
 */
export function describeWith(program: string, name: string, body: () => void): void {
  if (installed(program)) {
    describe(name, body);
    return;
  }
  if (process.env.CI === 'true') {
    describe(name, () => {
      it(`needs ${program}`, () => {
        throw new Error(`${program} is not installed, and CI=true: install it (.ci/run does)`);
      });
    });
    return;
  }
  console.warn(`SKIPPED "${name}": ${program} is not installed`);
  describe.skip(name, body);
}

/** A real redis-server of the test's own on a free loopback port, with no persistence; stop() and start() again. */
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
    const child = spawn('redis-server', ['--port', String(this.port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    this.process = child;
    let output = '';
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`redis-server did not start:\n${output}`)), 10_000);
      child.stdout?.on('data', (chunk: Buffer) => {
        output += chunk.toString();
        if (output.includes('Ready to accept connections')) {
          clearTimeout(timer);
          resolve();
        }
      });
      child.on('exit', (code) => {
        clearTimeout(timer);
        reject(new Error(`redis-server exited with ${code}:\n${output}`));
      });
    });
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
    const child = this.process;
    if (!child || child.exitCode !== null) return;
    child.kill('SIGKILL');
    await once(child, 'exit');
  }
}

/**
 * Logs in, then fires reads of that session around a logout, all at once: returns the cookie. Afterwards the
 * session must stay logged out, whatever order the store saw the reads' touches and the logout's delete in.
 */
export async function logoutRacingReads(app: Express, { reads = 30, waitMs = 0 } = {}): Promise<string> {
  const { default: request } = await import('supertest');
  const cookie = cookieHeader(shouldSetCookie(await request(app).post('/login?name=racer').expect(201)));
  // waiting past the renewal interval makes the reads renewals, which write the session back
  if (waitMs > 0) await sleep(waitMs);
  const read = () => request(app).get('/user').set('Cookie', cookie);
  const before = Array.from({ length: reads }, read);
  const logout = request(app).post('/logout').set('Cookie', cookie).expect(204);
  const after = Array.from({ length: reads }, read);
  await Promise.all([...before, logout, ...after]);
  return cookie;
}

const COLLECTION = path.join(__dirname, '..', 'postman', 'session-management.postman_collection.json');

/** runs the collection with newman against `baseUrl`; resolves with the run's summary */
export function runCollection(baseUrl: string): Promise<NewmanRunSummary> {
  return new Promise((resolve, reject) => {
    newman.run(
      { collection: COLLECTION, envVar: [{ key: 'baseUrl', value: baseUrl }], reporters: [], timeoutRequest: 5000 },
      (err, summary) => (err ? reject(err) : resolve(summary)),
    );
  });
}


const ROOT = path.join(__dirname, '..');
const SERVER = path.join(ROOT, 'src', 'server.ts');

export interface Run {
  child: ChildProcessWithoutNullStreams;
  output: () => string;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null; afterMs: number }>;
}

/** the real entry point, as `npm start` runs it, in a process of its own */
export function startServer(env: Record<string, string>): Run {
  const started = Date.now();
  const child = spawn(process.execPath, ['-r', 'ts-node/register/transpile-only', SERVER], {
    cwd: ROOT,
    // a developer's own .env must not leak in: everything the tests rely on is set here
    env: { PATH: process.env.PATH ?? '', LOG_LEVEL: 'silent', LOGIN_RATE_LIMIT_PER_MINUTE: '0', ...env },
  });
  let output = '';
  child.stdout.on('data', (chunk: Buffer) => (output += chunk.toString()));
  child.stderr.on('data', (chunk: Buffer) => (output += chunk.toString()));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null; afterMs: number }>((resolve) =>
    child.on('exit', (code, signal) => resolve({ code, signal, afterMs: Date.now() - started })),
  );
  return { child, output: () => output, exited };
}

/** waits for the start-up line; resolves with the port it names */
export async function listening(run: Run): Promise<number> {
  for (let waited = 0; waited < 20_000; waited += 50) {
    const match = /Server listening at http:\/\/localhost:(\d+)/.exec(run.output());
    if (match) return Number(match[1]);
    if (run.child.exitCode !== null) break;
    await sleep(50);
  }
  throw new Error(`server did not start:\n${run.output()}`);
}
