import express, { type Express } from 'express';
import { handleErrors, methodNotAllowed, notFound } from './errors';
import { requestId } from './logger';
import type { Metrics } from './metrics';
import { addHealthRoutes, type HealthOptions } from './routes/health';

/**
 * The app of the metrics listener (METRICS_HOST:METRICS_PORT), as Spring Boot and Keycloak keep a management port
 * apart: GET /metrics in Prometheus's text format and the health paths, and none of the application's routes, so
 * neither is reachable from wherever the public port is.
 */
export function createMetricsApp(metrics: Metrics, health: HealthOptions): Express {
  const app = express();
  app.disable('x-powered-by');
  app.set('etag', false);
  app.use(requestId(false));
  app
    .route('/metrics')
    .get(async (_req, res) => {
      const text = await metrics.registry.metrics();
      res.set('Content-Type', metrics.registry.contentType).set('Cache-Control', 'no-store').send(text);
    })
    .all(methodNotAllowed('GET, HEAD'));
  addHealthRoutes(app.router, health);
  app.use(notFound);
  app.use(handleErrors());
  return app;
}
