import path from 'node:path';
import express, { type Express } from 'express';
import type { Store as RateLimitStore } from 'express-rate-limit';
import helmet from 'helmet';
import type { Logger } from 'pino';
import type { Config } from './config';
import { crossOriginProtection } from './cross-origin';
import { handleErrors, notFound } from './errors';
import { createLogger, requestId, requestLogger } from './logger';
import type { Metrics } from './metrics';
import { addAdminRoutes } from './routes/admin';
import { addHealthRoutes, type Lifecycle } from './routes/health';
import { addSessionRoutes } from './routes/session';
import { addActiveSessionRoutes } from './routes/sessions';
import type { IndexedStore } from './stores/types';

export interface AppOptions {
  config: Readonly<Config>;
  store: IndexedStore;
  /** where the login limit counts; express-rate-limit's memory store when absent */
  rateLimitStore?: RateLimitStore;
  logger?: Logger;
  /** the Prometheus metrics the requests are counted in (METRICS_PORT); none when absent */
  metrics?: Metrics;
  /** the server's shutdown state, for /readyz; never stopping when absent */
  lifecycle?: Lifecycle;
}

// the route the page's files are counted under in metrics
const STATIC_ROUTE = '/{*file}';

/** The Express app: middleware order, routes, 404 and the error handler. It never listens. */
export function createApp({
  config,
  store,
  rateLimitStore,
  logger = createLogger(config),
  metrics,
  lifecycle = { stopping: false },
}: AppOptions): Express {
  const app = express();
  app.disable('x-powered-by');
  // every answer is fresh and personal: an ETag would be hashing for nothing
  app.set('etag', false);
  app.set('trust proxy', config.trustProxy);

  // first: every answer carries its ID (and every line the logger writes for it), and is timed whatever later
  // middleware does with it
  app.use(requestId(logger.level !== 'silent'));
  if (metrics) app.use(metrics.requests);
  app.use(helmet());
  if (config.logLevel !== 'silent') app.use(requestLogger(logger));
  // before every route, 404 and 405 included: a refused request never loads or creates a session
  app.use(crossOriginProtection(config.trustedOrigins));
  addHealthRoutes(app.router, { store, loginCounter: config.loginRateLimitPerMinute > 0 ? rateLimitStore : undefined, lifecycle });
  addSessionRoutes(app.router, { config, store, rateLimitStore, logger });
  addActiveSessionRoutes(app.router, { config, store });
  // without a token, the admin paths are unknown paths
  if (config.adminToken !== undefined) addAdminRoutes(app.router, { adminToken: config.adminToken, store, logger });
  // the page to try sessions in a browser; after the API, so API requests never look at the disk
  app.use(
    express.static(path.join(__dirname, 'public'), {
      redirect: false,
      setHeaders: metrics ? (res) => metrics.nameRoute(res as Parameters<Metrics['nameRoute']>[0], STATIC_ROUTE) : undefined,
    }),
  );
  app.use(notFound);
  app.use(handleErrors());
  return app;
}
