import http, { type IncomingMessage, type ServerResponse } from 'node:http';
import { makeApp, listen } from './helpers';

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
});
