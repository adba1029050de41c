import type { Request, Response, Router } from 'express';
import type { Config } from '../config';
import { HttpError, methodNotAllowed } from '../errors';
import type { ActiveSession, IndexedStore } from '../stores/types';
import { endCurrentSession, withSession } from './session';

/** S in the contract: the handle as `id`, times in ISO 8601; `current` only where there is a current session */
export function describeSession(session: ActiveSession, currentHandle?: string) {
  return {
    id: session.handle,
    ...(currentHandle !== undefined && { current: session.handle === currentHandle }),
    createdAt: new Date(session.createdAt).toISOString(),
    lastSeenAt: new Date(session.lastSeenAt).toISOString(),
    expiresAt: new Date(session.expiresAt).toISOString(),
    browser: session.browser,
    os: session.os,
    ip: session.ip,
  };
}

// the caller's name and their session's handle; 401 for a request with no logged-in session
function caller(req: Request): { name: string; handle: string } {
  const name = req.session.user?.name;
  if (name === undefined) throw new HttpError(401, 'Not logged in');
  return { name, handle: req.session.handle ?? '' };
}

/**
 * GET /sessions, DELETE /sessions/:id and DELETE /sessions: a user sees their sessions and ends one or all the
 * others (ASVS 7.5.2). In the tutorial's model the name is the identity; a real application would ask the user
 * to authenticate again before ending sessions.
 */
export function addActiveSessionRoutes(router: Router, { config, store }: { config: Readonly<Config>; store: IndexedStore }): void {
  const session = withSession(config, store);

  router
    .route('/sessions')
    .get(...session, async (req: Request, res: Response) => {
      const { name, handle } = caller(req);
      const sessions = await store.listSessions(name);
      res.json({ sessions: sessions.map((s) => describeSession(s, handle)) });
    })
    .delete(...session, async (req: Request, res: Response) => {
      const { name, handle } = caller(req);
      // "/sessions/" is a handle left empty, not a request to end every other session (Express matches it here)
      if (req.path !== '/sessions') throw new HttpError(404, 'Session not found');
      res.json({ ended: await store.endUserSessions(name, { except: handle, reason: 'revoked' }) });
    })
    .all(methodNotAllowed('GET, HEAD, DELETE'));

  router
    .route('/sessions/:id')
    .delete(...session, async (req: Request<{ id: string }>, res: Response) => {
      const { name, handle } = caller(req);
      if (req.params.id === handle) {
        await endCurrentSession(req, res, config);
      } else if (!(await store.endSession(name, req.params.id, 'revoked'))) {
        // the same answer for a handle never issued, expired, already ended or another user's
        throw new HttpError(404, 'Session not found');
      }
      res.status(204).end();
    })
    .all(methodNotAllowed('DELETE'));
}
