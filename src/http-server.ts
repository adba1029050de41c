import http, { IncomingMessage, ServerResponse, type Server } from 'node:http';
import type { Socket } from 'node:net';
import type { Express } from 'express';

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
export function createHttpServer(app: Express): Server {
  if (!callable(IncomingMessage) || !callable(ServerResponse)) return http.createServer(app);

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
      IncomingMessage: AppRequest as unknown as typeof IncomingMessage,
      ServerResponse: AppResponse as unknown as typeof ServerResponse,
    },
    app,
  );
}
