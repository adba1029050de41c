// Real processes for the tests and the benchmark: free ports, the server's entry point, redis-server. No jest
// globals here, so the benchmark can use it too.
import { spawn, spawnSync, type ChildProcess, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { once } from 'node:events';
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

/** whether a program is on the PATH (or, given a path, executable there) */
export function installed(program: string): boolean {
  return spawnSync('sh', ['-c', `command -v ${program}`]).status === 0;
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
