import { once } from 'node:events';
import http, { type IncomingMessage, type ServerResponse } from 'node:http';
import express from 'express';
import net, { type AddressInfo } from 'node:net';
import { answerClientError, type TimeoutOptions } from '../src/http-server';
import { makeApp, listen, sleep } from './helpers';

type RawClient = net.Socket & { response(): string; ended: Promise<unknown>; received(text: string): Promise<void> };

/** a raw TCP client that keeps its end open when the server closes its own (as a careless client does) */
async function rawClient(port: number): Promise<RawClient> {
  const socket = net.connect({ port, host: '127.0.0.1', allowHalfOpen: true });
  let response = '';
  socket.on('data', (chunk: Buffer) => (response += chunk.toString()));
  socket.on('error', () => {});
  const ended = Promise.race([once(socket, 'end'), once(socket, 'close')]);
  // waits (2 s at most) until the answer so far holds `text`
  const received = async (text: string) => {
    for (let waited = 0; waited < 2000 && !response.includes(text); waited += 20) await sleep(20);
  };
  await once(socket, 'connect');
  return Object.assign(socket, { response: () => response, ended, received });
}

/** `app` served on a free port and one raw client connected to it; both closed after `body`, however it ends */
async function onRawConnection(app: Parameters<typeof listen>[0], body: (client: RawClient) => Promise<void>, timeouts: TimeoutOptions = {}): Promise<void> {
  const server = await listen(app, timeouts);
  const client = await rawClient(server.port);
  try {
    await body(client);
  } finally {
    client.destroy();
    await server.close();
  }
}

function jsonBody(response: string): unknown {
  return JSON.parse(response.slice(response.indexOf('\r\n\r\n') + 4));
}

describe('the HTTP server', () => {
  it('when a request arrives, then it and its response already have the app\'s prototypes, so Express changes none', async () => {
    const { app } = makeApp();
    const server = await listen(app);
    const seen: { request: boolean; response: boolean }[] = [];
    // runs before Express: what Node made, before Express's setPrototypeOf
    server.server.prependListener('request', (req: IncomingMessage, res: ServerResponse) => {
      seen.push({ request: Object.getPrototypeOf(req) === app.request, response: Object.getPrototypeOf(res) === app.response });
    });
    try {
      const res = await fetch(`${server.url}/user`);

      expect(res.status).toBe(200);
      expect(await res.json()).toEqual({ info: 'No data present in session' });
      expect(seen).toEqual([{ request: true, response: true }]);
    } finally {
      await server.close();
    }
  });

  it('when requests and responses are made this way, then they are still Node\'s own, streams and all', async () => {
    const { app } = makeApp();
    const server = await listen(app);
    const checks: boolean[] = [];
    server.server.prependListener('request', (req: IncomingMessage, res: ServerResponse) => {
      checks.push(req instanceof http.IncomingMessage, res instanceof http.ServerResponse, typeof req.pipe === 'function');
    });
    try {
      const res = await fetch(`${server.url}/login?name=Zo%C3%AB`, { method: 'POST', body: 'ignored body', headers: { 'content-type': 'text/plain' } });

      expect(res.status).toBe(201);
      expect(checks).toEqual([true, true, true]);
    } finally {
      await server.close();
    }
  });

  describe('requests Node refuses before the app sees them', () => {
    it('when 50 clients send garbage and never close their end, then each gets a JSON 400 and no socket stays open', async () => {
      const server = await listen(makeApp().app);
      const clients = await Promise.all(Array.from({ length: 50 }, () => rawClient(server.port)));
      try {
        for (const client of clients) client.write('GARBAGE\r\n\r\n');
        await Promise.all(clients.map((client) => client.ended));
        // the server's side of each connection is gone, though no client closed its own
        let open = -1;
        for (let waited = 0; waited < 2000 && open !== 0; waited += 50) {
          open = await new Promise<number>((resolve) => server.server.getConnections((_err, count) => resolve(count)));
          if (open !== 0) await sleep(50);
        }

        expect(open).toBe(0);
        for (const client of clients) {
          expect(client.response()).toMatch(/^HTTP\/1\.1 400 Bad Request\r\n/);
          expect(jsonBody(client.response())).toEqual({ error: 'Bad request' });
        }
      } finally {
        clients.forEach((client) => client.destroy());
        await server.close();
      }
    });

    it('when a client sends its headers too slowly, then it gets Node\'s 408, in JSON', async () => {
      await onRawConnection(makeApp().app, async (client) => {
        client.write('GET /user HTTP/1.1\r\nHost: localhost\r\n');
        await client.ended;

        expect(client.response()).toMatch(/^HTTP\/1\.1 408 Request Timeout\r\n/);
        expect(client.response()).toMatch(/content-type: application\/json/i);
        expect(jsonBody(client.response())).toEqual({ error: 'Request timeout' });
      }, { headersTimeout: 300, requestTimeout: 1000, connectionsCheckingInterval: 50 });
    });

    it('when the headers are over 16 KB, then it gets Node\'s 431, in JSON', async () => {
      await onRawConnection(makeApp().app, async (client) => {
        client.write(`GET /user HTTP/1.1\r\nHost: localhost\r\nX-Big: ${'a'.repeat(20_000)}\r\n\r\n`);
        await client.ended;

        expect(client.response()).toMatch(/^HTTP\/1\.1 431 /);
        expect(jsonBody(client.response())).toEqual({ error: 'Request headers too large' });
      });
    });

    it('when a keep-alive connection that was answered before sends headers over 16 KB, then it still gets the 431', async () => {
      await onRawConnection(makeApp().app, async (client) => {
        client.write('GET /user HTTP/1.1\r\nHost: localhost\r\n\r\n');
        await client.received('No data present');
        client.write(`GET /user HTTP/1.1\r\nHost: localhost\r\nCookie: ${'a'.repeat(20_000)}\r\n\r\n`);
        await client.ended;

        const [first, second = ''] = client.response().split(/(?=HTTP\/1\.1 )/);
        expect(first).toMatch(/^HTTP\/1\.1 200 OK/);
        expect(second).toMatch(/^HTTP\/1\.1 431 /);
        expect(jsonBody(second)).toEqual({ error: 'Request headers too large' });
      });
    });

    it('when the request breaks while its response is already on its way, then nothing is written into that response', async () => {
      // a response that sends its head and part of its body, then waits
      const slow = express();
      slow.post('/slow', (_req, res) => {
        res.writeHead(200, { 'Content-Length': '10' });
        res.write('12345');
      });
      await onRawConnection(slow, async (client) => {
        client.write('POST /slow HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n');
        await client.received('12345');
        // not a chunk size: the parser fails with the response half sent
        client.write('zz\r\n');
        await client.ended;

        expect(client.response()).toMatch(/^HTTP\/1\.1 200 OK\r\n[\s\S]*\r\n\r\n12345$/);
      });
    });

    describe('answerClientError on a socket of its own', () => {
      let tcp: net.Server;
      let port: number;
      let accepted: Promise<net.Socket>;

      beforeEach(async () => {
        tcp = net.createServer({ allowHalfOpen: true });
        accepted = once(tcp, 'connection').then(([socket]) => socket as net.Socket);
        tcp.listen(0, '127.0.0.1');
        await once(tcp, 'listening');
        port = (tcp.address() as AddressInfo).port;
      });

      afterEach(() => new Promise<void>((resolve) => tcp.close(() => resolve())));

      it('when the chunk extensions are too large, then the answer is Node\'s 413, in JSON, and the socket is destroyed', async () => {
        const client = await rawClient(port);
        const socket = await accepted;

        answerClientError(Object.assign(new Error('too large'), { code: 'HPE_CHUNK_EXTENSIONS_OVERFLOW' }), socket);
        await client.ended;

        expect(client.response()).toMatch(/^HTTP\/1\.1 413 Payload Too Large\r\n/);
        expect(jsonBody(client.response())).toEqual({ error: 'Chunk extensions too large' });
        expect(socket.destroyed).toBe(true);
        client.destroy();
      });

    });
  });
});
