import type { Router } from 'express';
import type { Store as RateLimitStore } from 'express-rate-limit';
import type { Store } from 'express-session';
import { methodNotAllowed } from '../errors';
import { probeStore } from '../session';

/** whether the server is shutting down: set by whoever handles SIGTERM, read by /readyz */
export interface Lifecycle {
  stopping: boolean;
}

/** a store that can tell whether it can serve its callers now (the Redis login counter does) */
interface Probed {
  probe(): Promise<void>;
}

const isProbed = (value: unknown): value is Probed => typeof (value as Partial<Probed> | undefined)?.probe === 'function';

export interface HealthOptions {
  store: Store;
  /** where logins are counted, when shared: probed beside the store */
  loginCounter?: RateLimitStore;
  lifecycle: Lifecycle;
}

/**
 * The health paths, as Kubernetes names them:
 * - GET /livez: 200 while the process runs; touches nothing, so a slow store never gets a live process restarted;
 * - GET /readyz: 200 when the session store answers a real read and, when logins are counted in a shared store,
 *   that store can count them; 503 when either cannot, and from the moment shutdown starts, so a load balancer
 *   stops sending requests while the in-flight ones finish;
 * - GET /healthz: the same as /readyz (its name before there were two).
 */
export function addHealthRoutes(router: Router, { store, loginCounter, lifecycle }: HealthOptions): void {
  const probes = [() => probeStore(store)];
  if (isProbed(loginCounter)) probes.push(() => loginCounter.probe());

  router
    .route('/livez')
    .get((_req, res) => {
      res.set('Cache-Control', 'no-store').json({ status: 'ok' });
    })
    .all(methodNotAllowed('GET, HEAD'));

  for (const path of ['/readyz', '/healthz']) {
    router
      .route(path)
      .get(async (_req, res) => {
        res.set('Cache-Control', 'no-store');
        if (lifecycle.stopping) {
          res.status(503).json({ status: 'stopping' });
          return;
        }
        try {
          await Promise.all(probes.map((probe) => probe()));
          res.json({ status: 'ok' });
        } catch {
          res.status(503).json({ status: 'unavailable' });
        }
      })
      .all(methodNotAllowed('GET, HEAD'));
  }
}
