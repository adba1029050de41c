import { AsyncLocalStorage } from 'node:async_hooks';
import { createHmac, randomUUID } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { RequestHandler } from 'express';
import pino, { type DestinationStream, type Logger } from 'pino';
import pinoHttp from 'pino-http';
import type { Config } from './config';
import { CrossOriginError, isRefusal, StoreUnavailableError, type HttpError } from './errors';
import type { Audit } from './stores/types';

// the ID of the request whose work is running: every line logged on its behalf carries it, the store's audit lines too
const requestIds = new AsyncLocalStorage<string>();

/**
 * Lines at LOG_LEVEL: JSON, or pino-pretty's human-readable lines with LOG_FORMAT=pretty (a dev dependency, loaded
 * only then); to `destination` when given (tests keep the lines). Every line logged while a request is handled
 * carries its `requestId`.
 */
export function createLogger(config: Pick<Config, 'logLevel'> & Partial<Pick<Config, 'logFormat'>>, destination?: DestinationStream): Logger {
  const options = {
    level: config.logLevel,
    mixin: () => {
      const requestId = requestIds.getStore();
      return requestId === undefined ? {} : { requestId };
    },
  };
  if (destination) return pino(options, destination);
  if (config.logFormat !== 'pretty') return pino(options);
  // eslint-disable-next-line @typescript-eslint/no-require-imports -- loaded only when asked for: production installs no dev dependency
  const pretty = require('pino-pretty') as typeof import('pino-pretty');
  return pino(options, pretty({ colorize: process.stdout.isTTY, translateTime: 'SYS:HH:MM:ss.l', ignore: 'pid,hostname', singleLine: true, sync: true }));
}

// what an inbound X-Request-Id may be: anything else (too long, empty, spaces, control characters, two joined by
// a comma) could forge or break log lines, and is replaced
const REQUEST_ID = /^[A-Za-z0-9._:-]{1,128}$/;

/**
 * Runs `fn` outside any request's context: for lines about the process's own work (a Redis connection opened
 * during one request and failing later), which no request ID should claim.
 */
export function outsideRequests<T>(fn: () => T): T {
  return requestIds.exit(fn);
}

/**
 * The request's ID: the caller's `X-Request-Id` when it is 1 to 128 of `A-Za-z0-9._:-`, else a new UUID. Set as
 * `req.id` (the request line's `requestId`), echoed in the response, and carried by every line the request logs.
 */
export function requestId(logged: boolean): RequestHandler {
  return (req, res, next) => {
    const inbound = req.headers['x-request-id'];
    const id = typeof inbound === 'string' && REQUEST_ID.test(inbound) ? inbound : randomUUID();
    req.id = id;
    res.setHeader('X-Request-Id', id);
    if (logged) requestIds.run(id, next);
    else next();
  };
}

/**
 * The app's logger for a library that logs `(error, message)` (express-rate-limit: a misconfiguration it detects,
 * a store that failed to start): a line with the error's code and message, not a stack on stderr.
 */
export function libraryLogger(logger: Logger): { warn(err: unknown, message?: string): void; error(err: unknown, message?: string): void } {
  const line = (level: 'warn' | 'error') => (err: unknown, message?: string) => {
    const { code, message: detail } = (err ?? {}) as { code?: string; message?: string };
    logger[level]({ code }, [message, detail].filter(Boolean).join(': '));
  };
  return { warn: line('warn'), error: line('error') };
}

// a refusal in a few words, never a stack: why the store was unavailable, which headers a cross-origin request sent
function refusal(err: HttpError): Record<string, unknown> {
  const short = { type: err.name, message: err.message };
  if (err instanceof CrossOriginError) return { ...short, secFetchSite: err.secFetchSite, origin: err.origin };
  if (!(err instanceof StoreUnavailableError)) return short;
  const reason = err.reason as { message?: unknown } | undefined;
  return { ...short, cause: typeof reason?.message === 'string' ? reason.message : String(err.reason) };
}

/**
 * One line per request: method, path, status and time. Never headers (cookies), the query string (names)
 * or the session ID. A refusal the server means to give (429, 503) is a `warn` with a short `err` (its type,
 * message and cause); only an unexpected error is an `error`, with its stack.
 */
export function requestLogger(logger: Logger): RequestHandler {
  // the request's ID on its own line, whatever async context the response ends in
  const withId = (req: IncomingMessage, value: Record<string, unknown>) => ({ ...value, requestId: req.id });
  return pinoHttp({
    logger,
    wrapSerializers: false,
    customSuccessObject: (req, _res, value: Record<string, unknown>) => withId(req, value),
    customErrorObject: (req, _res, _err, value: Record<string, unknown>) => withId(req, value),
    serializers: {
      req: (req: IncomingMessage) => ({ method: req.method, path: (req.url ?? '').split('?', 1)[0] }),
      res: (res: ServerResponse) => ({ status: res.statusCode }),
      err: (err: Error) => (isRefusal(err) ? refusal(err) : pino.stdSerializers.err(err)),
    },
    customLogLevel: (_req, res, err) => {
      if (isRefusal(res.err) && !err) return 'warn';
      return err || res.err || res.statusCode >= 500 ? 'error' : 'info';
    },
  });
}

/**
 * The audit log of sessions (OWASP's logging vocabulary): an `info` line as each session starts or ends, with the
 * user, the truncated IP, the browser and a keyed hash of the session ID, which tells one session's lines apart
 * without giving away the ID (the key derives from the signing secret). Undefined when `info` lines are off.
 */
export function sessionAudit(logger: Logger, secrets: readonly string[]): Audit | undefined {
  if (!logger.isLevelEnabled('info')) return undefined;
  const key = createHmac('sha256', secrets[0] ?? '').update('session audit').digest();
  return ({ event, reason, sid, user, ip, browser }) => {
    const session = createHmac('sha256', key).update(sid).digest('base64url').slice(0, 22);
    logger.info({ event, reason, user, ip, browser, session }, reason ? `${event}: ${reason}` : event);
  };
}
