// The only module that touches the process: environment, ports, signals. Nothing imports it.
// First the environment (.env), then tracing when asked for, before anything it would trace is loaded
import './environment';
import { stopTracing } from './tracing';
import http from 'node:http';
import { getHeapStatistics } from 'node:v8';
import { createApp } from './app';
import { ConfigError, loadConfig } from './config';
import { createHttpServer } from './http-server';
import { createLogger } from './logger';
import type { Lifecycle } from './routes/health';
import { createSessionStore, heapWarning } from './stores';

// in-flight requests get this long after SIGTERM/SIGINT; then their connections are cut and the process ends (the
// store's close takes 1 s at most): within 10 s in all
const SHUTDOWN_GRACE_MS = 8000;

async function main(): Promise<void> {
  let config;
  try {
    config = loadConfig(process.env);
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    console.error(err.message);
    process.exit(1);
  }

  const logger = createLogger(config);
  for (const warning of config.warnings) logger.warn(warning);
  const heap = heapWarning(config, getHeapStatistics().heap_size_limit);
  if (heap) logger.warn(heap);

  // prom-client only when metrics are asked for: loaded, it alone raised a login flood's peak memory by 10 to 40 MB
  const metrics = config.metricsPort === undefined ? undefined : (await import('./metrics')).createMetrics();
  const sessions = await createSessionStore(config, logger, metrics);
  try {
    await sessions.ready();
  } catch (err) {
    console.error(err instanceof Error ? err.message : String(err));
    process.exit(1);
  }

  const lifecycle: Lifecycle = { stopping: false };
  const rateLimitStore = sessions.rateLimitStore?.();
  const app = createApp({ config, store: sessions.store, rateLimitStore, logger, metrics, lifecycle });
  const server = createHttpServer(app).listen(config.port);
  server.on('listening', () => {
    const address = server.address();
    const port = typeof address === 'object' && address ? address.port : config.port;
    console.log('Server listening at http://localhost:%s', port);
  });
  server.on('error', (err: NodeJS.ErrnoException) => {
    console.error(`Cannot listen on port ${config.port} (APPLICATION_PORT): ${err.code ?? err.message}`);
    process.exit(1);
  });

  // the metrics and health listener: open until the process ends, so probes see /readyz 503 through the drain
  const metricsServer =
    metrics && config.metricsPort !== undefined
      ? http
          .createServer(
            (await import('./metrics-server')).createMetricsApp(metrics, {
              store: sessions.store,
              loginCounter: config.loginRateLimitPerMinute > 0 ? rateLimitStore : undefined,
              lifecycle,
            }),
          )
          .listen(config.metricsPort, config.metricsHost)
      : undefined;
  metricsServer?.on('listening', () => logger.info(`metrics at http://${config.metricsHost}:${config.metricsPort}/metrics`));
  metricsServer?.on('error', (err: NodeJS.ErrnoException) => {
    console.error(`Cannot listen on ${config.metricsHost}:${config.metricsPort} (METRICS_HOST, METRICS_PORT): ${err.code ?? err.message}`);
    process.exit(1);
  });

  let stopping = false;
  const stop = (signal: NodeJS.Signals): void => {
    if (stopping) return;
    stopping = true;
    // from now on /readyz answers 503, on the connections still open and on the metrics listener, which stays open
    // through the drain; the public listener stops accepting at once, so a load balancer should stop sending before
    // the signal comes (Kubernetes: a preStop pause; see docs/operations.md)
    lifecycle.stopping = true;
    logger.info({ signal }, 'shutting down');
    let finishing = false;
    const finish = (): void => {
      if (finishing) return;
      finishing = true;
      metricsServer?.closeAllConnections();
      metricsServer?.close();
      Promise.all([
        sessions.close().catch((err: unknown) => logger.warn({ err }, 'closing the session store failed')),
        // the last spans out, a second at most
        stopTracing(),
      ]).finally(() => process.exit(0));
    };
    // the grace is over: cut what is left and end, whether or not every connection has reported closing
    setTimeout(() => {
      server.closeAllConnections();
      finish();
    }, SHUTDOWN_GRACE_MS).unref();
    // keep-alive connections close as soon as they fall idle, busy ones once their response is out
    setInterval(() => server.closeIdleConnections(), 100).unref();
    // stop accepting; the callback runs when the last connection is gone
    server.close(finish);
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
