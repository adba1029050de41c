import { randomBytes } from 'node:crypto';
import cookieParser from 'cookie-parser';
import type { Request, RequestHandler, Response, Router } from 'express';
import { rateLimit, type Store as RateLimitStore } from 'express-rate-limit';
import type { Store } from 'express-session';
import type { Logger } from 'pino';
import type { Config } from '../config';
import { describeDevice } from '../device';
import { HttpError, methodNotAllowed } from '../errors';
import { libraryLogger } from '../logger';
import { createSessionMiddleware, renewSession, saveLogin, sessionFor, settle } from '../session';

export const MAX_NAME_LENGTH = 64;
// C0 and C1 control characters, DEL included: never part of a name, and the stuff of log and header injection
const CONTROL_CHARACTER = /\p{Cc}/u;

/** The login name from `?name=`: trimmed, 1 to 64 characters of any script, one value, no control characters. */
export function parseName(value: unknown): string {
  if (value === undefined) throw new HttpError(400, 'Query parameter "name" is required');
  if (typeof value !== 'string') throw new HttpError(400, 'Query parameter "name" must be given once');
  if (CONTROL_CHARACTER.test(value)) throw new HttpError(400, 'Query parameter "name" must not contain control characters');
  const name = value.trim();
  if (name === '') throw new HttpError(400, 'Query parameter "name" must not be empty or blank');
  // count code points, so "李" or an emoji is one character, as a person counts
  if ([...name].length > MAX_NAME_LENGTH) {
    throw new HttpError(400, `Query parameter "name" must be at most ${MAX_NAME_LENGTH} characters`);
  }
  return name;
}

export async function login(req: Request, res: Response): Promise<void> {
  const name = parseName(req.query.name);
  try {
    // a new session ID at every login, so an ID planted before login is worthless after it (session fixation),
    // whatever that session held; the new one starts with the user's tag (see userTag)
    sessionFor(req, name);
    await settle(req.session, 'regenerate');
    const now = Date.now();
    req.session.user = { name };
    req.session.loginAt = now;
    req.session.cookieRenewedAt = now;
    // what GET /sessions shows of this session: a random handle, not derived from the ID, and its device
    req.session.handle = randomBytes(16).toString('base64url');
    req.session.device = describeDevice(req.get('user-agent'), req.ip);
    // saved before answering: a store that is full or down gets its error answer, not a 201 and a lost session
    await saveLogin(req.session);
  } catch (err) {
    // nothing usable was stored: without a session, express-session sends no cookie and saves nothing at the end
    Reflect.deleteProperty(req, 'session');
    throw err;
  }
  res.status(201).json({ info: 'User logged in' });
}

export function showUser(req: Request, res: Response): void {
  const user = req.session.user;
  if (user === undefined) {
    res.status(200).json({ info: 'No data present in session' });
    return;
  }
  res.json({ info: 'User profile info', data: { name: user.name } });
}

export function logout({ cookieName, cookieSecure }: Pick<Config, 'cookieName' | 'cookieSecure'>) {
  return async (req: Request, res: Response): Promise<void> => {
    // any cookie of that name, valid or not, is cleared: the browser should not keep sending it
    const carried = req.cookies?.[cookieName] !== undefined || req.signedCookies?.[cookieName] !== undefined;
    if (carried) await endCurrentSession(req, res, { cookieName, cookieSecure });
    res.status(204).end();
  };
}

/** the request's own session destroyed and its cookie cleared: a logout */
export async function endCurrentSession(
  req: Request,
  res: Response,
  { cookieName, cookieSecure }: Pick<Config, 'cookieName' | 'cookieSecure'>,
): Promise<void> {
  await settle(req.session, 'destroy');
  // cleared with the attributes it was set with, or the browser keeps it
  const secure = cookieSecure === 'auto' ? req.secure : cookieSecure;
  res.clearCookie(cookieName, { path: '/', httpOnly: true, sameSite: 'lax', secure });
}

export const noStore: RequestHandler = (_req, res, next) => {
  res.setHeader('Cache-Control', 'no-store');
  next();
};

/** what every route reading a session runs first: no caching, the session loaded (the stores serve none past
 * its timeouts or ended), and renewed */
export function withSession(config: Readonly<Config>, store: Store): RequestHandler[] {
  return [noStore, createSessionMiddleware(config, store), renewSession(config)];
}

function loginRateLimit(perMinute: number, logger: Logger, store?: RateLimitStore): RequestHandler[] {
  if (perMinute === 0) return [];
  return [
    rateLimit({
      windowMs: 60_000,
      limit: perMinute,
      store,
      logger: libraryLogger(logger),
      standardHeaders: 'draft-8',
      legacyHeaders: false,
      // express-rate-limit has set Retry-After already; the error handler writes the JSON
      handler: (_req, _res, next) => next(new HttpError(429, 'Too many login attempts, try again later')),
    }),
  ];
}

/**
 * Adds POST /login, GET /user and POST /logout to `router` (the app itself: a nested Router would cost every
 * request a layer), each with the session loaded (the stores serve none past its timeouts) and renewed.
 */
export function addSessionRoutes(
  router: Router,
  { config, store, rateLimitStore, logger }: { config: Readonly<Config>; store: Store; rateLimitStore?: RateLimitStore; logger: Logger },
): void {
  const session = withSession(config, store);

  router
    .route('/login')
    .post(...loginRateLimit(config.loginRateLimitPerMinute, logger, rateLimitStore), ...session, login)
    .all(methodNotAllowed('POST'));
  router.route('/user').get(...session, showUser).all(methodNotAllowed('GET, HEAD'));
  router
    .route('/logout')
    .post(cookieParser(config.secrets), ...session, logout(config))
    .all(methodNotAllowed('POST'));
}
