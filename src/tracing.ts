// The second module the server loads, before http, Express or redis: OpenTelemetry traces only the modules loaded
// after it starts. Opt-in: unless an OTEL_* variable asks for traces, no OpenTelemetry SDK or instrumentation is
// loaded at all (with it, start-up takes about half a second longer: `npm run bench` reports both).
import type { NodeSDK } from '@opentelemetry/sdk-node';

// the paths probes and scrapers call every few seconds: a span each would be noise
const UNTRACED = new Set(['/livez', '/readyz', '/healthz', '/metrics']);

/** whether OpenTelemetry's standard variables ask for traces (`none` and OTEL_SDK_DISABLED=true say no) */
function tracingRequested(env: NodeJS.ProcessEnv): boolean {
  if (env.OTEL_SDK_DISABLED?.trim().toLowerCase() === 'true') return false;
  const exporter = env.OTEL_TRACES_EXPORTER?.trim();
  if (exporter === 'none') return false;
  return Boolean(exporter) || Boolean(env.OTEL_EXPORTER_OTLP_ENDPOINT?.trim()) || Boolean(env.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT?.trim());
}

/**
 * The OTEL_* variables the SDK reads, as this server sets them: traces only (Prometheus is the one metrics path, and
 * the log lines go to stdout), and a service name of our own only when neither of OpenTelemetry's two ways names
 * the service (an empty value names nothing).
 */
export function tracingEnvironment(env: NodeJS.ProcessEnv): void {
  env.OTEL_METRICS_EXPORTER = 'none';
  env.OTEL_LOGS_EXPORTER = 'none';
  if (!env.OTEL_SERVICE_NAME?.trim() && !/(^|,)\s*service\.name\s*=/.test(env.OTEL_RESOURCE_ATTRIBUTES ?? '')) {
    env.OTEL_SERVICE_NAME = 'session-management-app';
  }
}

function startTracing(env: NodeJS.ProcessEnv): NodeSDK {
  tracingEnvironment(env);
  /* eslint-disable @typescript-eslint/no-require-imports -- loaded only when traces are asked for, and synchronously, before what they instrument */
  const { NodeSDK } = require('@opentelemetry/sdk-node') as typeof import('@opentelemetry/sdk-node');
  const { HttpInstrumentation } = require('@opentelemetry/instrumentation-http') as typeof import('@opentelemetry/instrumentation-http');
  const { ExpressInstrumentation } = require('@opentelemetry/instrumentation-express') as typeof import('@opentelemetry/instrumentation-express');
  const { RedisInstrumentation } = require('@opentelemetry/instrumentation-redis') as typeof import('@opentelemetry/instrumentation-redis');
  /* eslint-enable @typescript-eslint/no-require-imports */
  const sdk = new NodeSDK({
    instrumentations: [
      new HttpInstrumentation({ ignoreIncomingRequestHook: (req) => UNTRACED.has((req.url ?? '').split('?', 1)[0]!) }),
      new ExpressInstrumentation(),
      new RedisInstrumentation(),
    ],
  });
  sdk.start();
  return sdk;
}

const sdk = tracingRequested(process.env) ? startTracing(process.env) : undefined;

/** sends the spans still buffered; resolves at once when tracing is off, and within `ms` whatever the collector does */
export async function stopTracing(ms = 1000): Promise<void> {
  if (!sdk) return;
  await Promise.race([sdk.shutdown().catch(() => {}), new Promise((resolve) => setTimeout(resolve, ms).unref())]);
}
