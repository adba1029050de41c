import type { Router } from 'express';
import type { Store } from 'express-session';
import { methodNotAllowed } from '../errors';
import { probeStore } from '../session';

/** GET /healthz: 200 when the session store answers a real read, 503 when it does not */
export function addHealthRoutes(router: Router, store: Store): void {
  router
    .route('/healthz')
    .get(async (_req, res) => {
      res.set('Cache-Control', 'no-store');
      try {
        await probeStore(store);
        res.json({ status: 'ok' });
      } catch {
        res.status(503).json({ status: 'unavailable' });
      }
    })
    .all(methodNotAllowed('GET, HEAD'));
}
