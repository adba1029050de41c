import type { ErrorRequestHandler, RequestHandler } from 'express';

/** an error whose status and message are meant for the client */
export class HttpError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly headers: Readonly<Record<string, string>> = {},
  ) {
    super(message);
    this.name = 'HttpError';
  }
}

/** the session store could not be reached or did not answer in time */
export class StoreUnavailableError extends HttpError {
  constructor(readonly reason: unknown) {
    super(503, 'Session store unavailable, try again shortly', { 'Retry-After': '5' });
    this.name = 'StoreUnavailableError';
  }
}

/** an unsafe request from a page of another origin; the two headers that decided it are kept for the log */
export class CrossOriginError extends HttpError {
  constructor(
    readonly secFetchSite: string | undefined,
    readonly origin: string | undefined,
  ) {
    super(403, 'Cross-origin request refused', { 'Cache-Control': 'no-store' });
    this.name = 'CrossOriginError';
  }
}

export const notFound: RequestHandler = () => {
  throw new HttpError(404, 'Not found');
};

/** for a route's other methods: 405 naming the ones it has */
export function methodNotAllowed(allow: string): RequestHandler {
  return () => {
    throw new HttpError(405, 'Method not allowed', { Allow: allow });
  };
}

// errors from Express and its parsers (http-errors) carry a status and say whether their message is safe to show
interface ClientError {
  status: number;
  expose?: boolean;
  message: string;
}

function isClientError(err: unknown): err is ClientError {
  const status = (err as { status?: unknown } | null)?.status;
  return typeof status === 'number' && status >= 400 && status < 500;
}

/** a refusal the server means to give (429, 503, a cross-origin 403): logged short, at warn, on its request's line */
export function isRefusal(err: unknown): err is HttpError {
  return err instanceof HttpError && (err.status === 429 || err.status >= 500 || err instanceof CrossOriginError);
}

/**
 * The one error handler: JSON for every failure, and nothing of a 5xx's cause in the response. What went wrong
 * is logged once, on the request's own line (`requestLogger` reads `res.err`): a refusal briefly, an unexpected
 * error with its stack. Without the request log (LOG_LEVEL=silent), nothing is logged at all.
 */
export function handleErrors(): ErrorRequestHandler {
  return (err: unknown, _req, res, _next) => {
    if (isRefusal(err) || !(err instanceof HttpError || isClientError(err))) res.err = err as Error;
    // the response is already on its way (a save failing at its end): nothing more to say to this client
    if (res.headersSent) return;

    let status = 500;
    let message = 'Internal server error';
    if (err instanceof HttpError) {
      status = err.status;
      message = err.message;
      res.set(err.headers);
    } else if (isClientError(err)) {
      status = err.status;
      message = err.expose === true ? err.message : 'Bad request';
    }
    res.status(status).json({ error: message });
  };
}
