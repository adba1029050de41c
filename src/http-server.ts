import { randomUUID } from 'node:crypto';
import http, { IncomingMessage, ServerResponse, STATUS_CODES, type Server, type ServerOptions } from 'node:http';
import type { Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import type { Express } from 'express';

/** the server's request timeouts; Node's defaults unless a test needs them short */
export type TimeoutOptions = Pick<ServerOptions, 'headersTimeout' | 'requestTimeout' | 'connectionsCheckingInterval'>;

// Node's own request and response constructors are plain functions (not classes) and can be called on an object
// made elsewhere; should a Node release turn them into classes, the server falls back to Node's defaults
const callable = (fn: unknown): boolean => typeof fn === 'function' && !/^class\b/.test(Function.prototype.toString.call(fn));

/**
 * The HTTP server for `app`, with requests and responses made with the app's prototypes from the start.
 *
 * Express gives every request and response the app's prototypes with `Object.setPrototypeOf` as it receives them
 * (its `app.handle`). V8 handles that badly: measured with `--trace-gc-nvp`, it keeps about a third of each
 * request's garbage alive past the next young-generation GC, to be promoted and swept by full collections. Here it
 * cost about 40 % of a `GET /user`'s CPU time, and some 60 MB of a login flood's peak memory. Node lets a server name the constructors of its requests and responses (the `IncomingMessage` and
 * `ServerResponse` options, "useful for extending the original"); made with Express's prototypes already, the
 * objects need no change, and Express's `setPrototypeOf` finds nothing to do. No library does this: hand-written.
 */
export function createHttpServer(app: Express, timeouts: TimeoutOptions = {}): Server {
  const server = createServer(app, timeouts);
  server.on('clientError', answerClientError);
  return server;
}

function createServer(app: Express, timeouts: TimeoutOptions): Server {
  if (!callable(IncomingMessage) || !callable(ServerResponse)) return http.createServer(timeouts, app);

  function AppRequest(this: IncomingMessage, socket: Socket): void {
    Reflect.apply(IncomingMessage, this, [socket]);
  }
  AppRequest.prototype = app.request;

  function AppResponse(this: ServerResponse, req: IncomingMessage, options?: object): void {
    Reflect.apply(ServerResponse, this, [req, options]);
  }
  AppResponse.prototype = app.response;

  return http.createServer(
    {
      ...timeouts,
      IncomingMessage: AppRequest as unknown as typeof IncomingMessage,
      ServerResponse: AppResponse as unknown as typeof ServerResponse,
    },
    app,
  );
}

// the check Node's own handler makes, on the field it reads: a response on this connection whose head is already
// written (a keep-alive connection whose earlier responses are complete has none, and still gets its answer)
function responseUnderway(socket: Duplex): boolean {
  const response = (socket as { _httpMessage?: { headersSent?: boolean } | null })._httpMessage;
  return response?.headersSent === true;
}

// Node's own answers to what it refuses before the app sees a request, each with its status
const REFUSALS: Readonly<Record<string, readonly [number, string]>> = {
  HPE_HEADER_OVERFLOW: [431, 'Request headers too large'],
  HPE_CHUNK_EXTENSIONS_OVERFLOW: [413, 'Chunk extensions too large'],
  ERR_HTTP_REQUEST_TIMEOUT: [408, 'Request timeout'],
};

/**
 * What Node does with a request it cannot parse or that came too slowly (its default `clientError` handling),
 * with a JSON body and a request ID of its own, as every answer has: the same statuses (431, 413, 408, else 400),
 * an answer only when nothing of a response has been written on the connection yet, and the socket destroyed
 * afterwards, so a client that never closes its end keeps nothing open here.
 */
export function answerClientError(err: NodeJS.ErrnoException, socket: Duplex): void {
  if (err.code !== 'ECONNRESET' && socket.writable && !responseUnderway(socket)) {
    const [status, message] = REFUSALS[err.code ?? ''] ?? [400, 'Bad request'];
    const body = JSON.stringify({ error: message });
    socket.write(
      `HTTP/1.1 ${status} ${STATUS_CODES[status]}\r\nContent-Type: application/json; charset=utf-8\r\n` +
        `Content-Length: ${Buffer.byteLength(body)}\r\nX-Request-Id: ${randomUUID()}\r\nConnection: close\r\n\r\n${body}`,
    );
  }
  socket.destroy();
}
