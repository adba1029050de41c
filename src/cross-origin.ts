import type { Request, RequestHandler } from 'express';
import { CrossOriginError } from './errors';

// Hand-written: Express's CSRF middlewares (csrf-csrf, csrf-sync) are token schemes that would break curl and
// Postman; this is the header rule of Go's net/http.CrossOriginProtection, which needs no token.

const SAFE_METHODS = new Set(['GET', 'HEAD', 'OPTIONS']);

/**
 * Whether an unsafe request comes from a page of another origin and must be refused. Decided in this order:
 *
 * 1. an `Origin` listed exactly in `trustedOrigins` is allowed, whatever `Sec-Fetch-Site` says;
 * 2. `Sec-Fetch-Site: same-origin` or `none` (a typed URL, a bookmark) is allowed; any other value (`same-site`,
 *    `cross-site`, anything unknown) is refused;
 * 3. with neither `Sec-Fetch-Site` nor `Origin` the request is allowed: curl, Postman, server to server (every
 *    browser since 2023 sends `Sec-Fetch-Site`, and every browser sends `Origin` on a cross-origin POST);
 * 4. an `Origin` alone (an older browser) is allowed when its host and port are the request's `Host` (the
 *    forwarded host behind a trusted proxy), and refused otherwise; `Origin: null` is refused.
 *
 * The scheme is not compared in step 4, as in Go: `Host` carries none. HSTS closes that gap.
 */
function isRefused(req: Request, trustedOrigins: ReadonlySet<string>): boolean {
  const origin = req.headers.origin;
  if (origin !== undefined && trustedOrigins.has(origin)) return false;

  const site = req.headers['sec-fetch-site'];
  if (site !== undefined) return site !== 'same-origin' && site !== 'none';

  if (origin === undefined) return false;
  return !sameHost(origin, req.host);
}

// host and port of the Origin against the Host header, default ports made explicit by the Origin's scheme
function sameHost(origin: string, host: string | undefined): boolean {
  if (host === undefined) return false;
  try {
    const from = new URL(origin);
    if (from.origin === 'null') return false;
    return from.host === new URL(`${from.protocol}//${host}`).host;
  } catch {
    // `null`, a list of values, or anything else that is not one origin
    return false;
  }
}

// what of a header value the log keeps: a client may send kilobytes
const MAX_LOGGED_LENGTH = 200;
const forLog = (value: string | undefined) => value?.slice(0, MAX_LOGGED_LENGTH);

/**
 * Refuses unsafe requests from pages of other origins (login CSRF, forged logouts) with 403, before any
 * session is loaded or created; mounted ahead of every route, so a new route is covered without a line. The
 * request's log line (a `warn`) carries the two headers' values.
 */
export function crossOriginProtection(trustedOrigins: readonly string[]): RequestHandler {
  const trusted = new Set(trustedOrigins);
  return (req, _res, next) => {
    if (SAFE_METHODS.has(req.method) || !isRefused(req, trusted)) {
      next();
      return;
    }
    next(new CrossOriginError(forLog(req.headers['sec-fetch-site']), forLog(req.headers.origin)));
  };
}
