import type { Router } from 'express';
import type { Store as RateLimitStore } from 'express-rate-limit';
import type { Store } from 'express-session';
import { methodNotAllowed } from '../errors';
import { probeStore } from '../session';

/** a store that can tell whether it can serve its callers now (the Redis login counter does) */
interface Probed {
  probe(): Promise<void>;
}

const isProbed = (value: unknown): value is Probed => typeof (value as Partial<Probed> | undefined)?.probe === 'function';

/**
 * GET /healthz: 200 when the session store answers a real read and, when logins are counted in a shared store,
 * that store can count them; 503 when either cannot.
 */
export function addHealthRoutes(router: Router, store: Store, loginCounter?: RateLimitStore): void {
  const probes = [() => probeStore(store)];
  if (isProbed(loginCounter)) probes.push(() => loginCounter.probe());
  router
    .route('/healthz')
    .get(async (_req, res) => {
      res.set('Cache-Control', 'no-store');
      try {
        await Promise.all(probes.map((probe) => probe()));
        res.json({ status: 'ok' });
      } catch {
        res.status(503).json({ status: 'unavailable' });
      }
    })
    .all(methodNotAllowed('GET, HEAD'));
}
