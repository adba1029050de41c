// The only module that touches the process: environment, port, signals. Nothing imports it.
import { getHeapStatistics } from 'node:v8';
import dotenv from 'dotenv';
import { createApp } from './app';
import { ConfigError, loadConfig } from './config';
import { createHttpServer } from './http-server';
import { createLogger } from './logger';
import { createSessionStore, heapWarning } from './stores';

// in-flight requests get this long after SIGTERM/SIGINT; then their connections are cut and the process ends (the
// store's close takes 1 s at most): within 10 s in all
const SHUTDOWN_GRACE_MS = 8000;

async function main(): Promise<void> {
  // as in the tutorial: a .env file outside production; in production the environment is the only source
  if (process.env.NODE_ENV !== 'production') dotenv.config({ quiet: true });

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

  const sessions = await createSessionStore(config, logger);
  try {
    await sessions.ready();
  } catch (err) {
    console.error(err instanceof Error ? err.message : String(err));
    process.exit(1);
  }

  const app = createApp({ config, store: sessions.store, rateLimitStore: sessions.rateLimitStore?.(), logger });
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

  let stopping = false;
  const stop = (signal: NodeJS.Signals): void => {
    if (stopping) return;
    stopping = true;
    logger.info({ signal }, 'shutting down');
    let finishing = false;
    const finish = (): void => {
      if (finishing) return;
      finishing = true;
      sessions
        .close()
        .catch((err: unknown) => logger.warn({ err }, 'closing the session store failed'))
        .finally(() => process.exit(0));
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
