import { createHash, timingSafeEqual } from 'node:crypto';
import type { Request, RequestHandler, Response, Router } from 'express';
import type { Logger } from 'pino';
import { HttpError, methodNotAllowed } from '../errors';
import type { IndexedStore } from '../stores/types';
import { noStore } from './session';
import { describeSession } from './sessions';

const sha256 = (value: string): Buffer => createHash('sha256').update(value).digest();

/** `Authorization: Bearer <token>`, compared in constant time (both sides hashed first, so lengths match too) */
export function requireBearer(token: string): RequestHandler {
  const expected = sha256(token);
  return (req, _res, next) => {
    const match = /^Bearer +(\S+) *$/i.exec(req.get('authorization') ?? '');
    if (!match?.[1] || !timingSafeEqual(sha256(match[1]), expected)) {
      throw new HttpError(401, 'Unauthorized', { 'WWW-Authenticate': 'Bearer' });
    }
    next();
  };
}

/**
 * The operators' API (ASVS 7.4.5), only when ADMIN_TOKEN is set: a user's sessions listed or ended, or everyone's
 * ended. Each action is logged with what it ended, never with the token.
 */
export function addAdminRoutes(
  router: Router,
  { adminToken, store, logger }: { adminToken: string; store: IndexedStore; logger: Logger },
): void {
  const admin = [noStore, requireBearer(adminToken)];

  router
    .route('/admin/users/:name/sessions')
    .get(...admin, async (req: Request<{ name: string }>, res: Response) => {
      const sessions = await store.listSessions(req.params.name);
      res.json({ sessions: sessions.map((session) => describeSession(session)) });
    })
    .delete(...admin, async (req: Request<{ name: string }>, res: Response) => {
      const ended = await store.endUserSessions(req.params.name, { reason: 'revoked_by_admin' });
      logger.info({ event: 'authz_admin', action: 'end_user_sessions', user: req.params.name, ended }, 'admin ended a user\'s sessions');
      res.json({ ended });
    })
    .all(methodNotAllowed('GET, HEAD, DELETE'));

  router
    .route('/admin/sessions')
    .delete(...admin, async (_req: Request, res: Response) => {
      const ended = await store.endAllSessions();
      logger.info({ event: 'authz_admin', action: 'end_all_sessions', ended }, 'admin ended every session');
      res.json({ ended });
    })
    .all(methodNotAllowed('DELETE'));
}
