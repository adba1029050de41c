import { performance } from 'node:perf_hooks';
import type { Request, RequestHandler, Response } from 'express';
import type { Store as RateLimitStore } from 'express-rate-limit';
import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client';
import { CrossOriginError } from './errors';
import { StoreFullError } from './stores/memory';
import type { Audit, EndReason, IndexedStore } from './stores/types';

// Prometheus through prom-client, loaded only when METRICS_PORT asks for metrics (the server imports this module
// then, and the app only its types), with a middleware of our own: express-prom-bundle labels raw paths, so 500
// random URLs would be 500 series.

/** what a login came to, as `sessions_logins_total{result}` counts it */
type LoginResult = 'success' | 'invalid' | 'rate_limited' | 'store_full' | 'store_unavailable' | 'cross_origin_refused';

export type StoreKind = 'memory' | 'redis';

// OpenTelemetry's advice for http.server.request.duration, in seconds
const REQUEST_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10];
// a store operation: a memory read is microseconds, a Redis round trip a millisecond or so, the deadline 2 s
const STORE_BUCKETS = [0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5];
// every other method (Node's parser knows some thirty) is `_OTHER`, as OpenTelemetry names it
const METHODS = new Set(['GET', 'HEAD', 'POST', 'PUT', 'DELETE', 'PATCH', 'OPTIONS', 'CONNECT', 'TRACE']);
const UNMATCHED = 'unmatched';

const LOGIN_RESULTS: readonly LoginResult[] = ['success', 'invalid', 'rate_limited', 'store_full', 'store_unavailable', 'cross_origin_refused'];
const END_REASONS: readonly EndReason[] = ['logout', 'revoked', 'revoked_by_admin', 'evicted', 'idle_timeout', 'absolute_timeout'];
// the login route as the router matches it (case-insensitive, an optional trailing slash), for a login refused before routing
const LOGIN_PATH = /^\/login\/?$/i;

// responses whose route a middleware named without a router's route (the page's static files)
const namedRoutes = new WeakMap<Response, string>();

/** the route template a request matched (`req.baseUrl + req.route.path`), or `unmatched` */
function routeOf(req: Request, res: Response): string {
  const route = req.route as { path?: unknown } | undefined;
  if (typeof route?.path === 'string') return req.baseUrl + route.path;
  return namedRoutes.get(res) ?? UNMATCHED;
}

/** what a finished `POST /login` came to; undefined for any other request, or a login that failed unexpectedly (500) */
function loginResult(req: Request, res: Response): LoginResult | undefined {
  if (req.method !== 'POST') return undefined;
  const err = res.err;
  if (err instanceof CrossOriginError) return LOGIN_PATH.test(req.path) ? 'cross_origin_refused' : undefined;
  if (routeOf(req, res) !== '/login') return undefined;
  switch (res.statusCode) {
    case 201:
      return 'success';
    case 400:
      return 'invalid';
    case 429:
      return 'rate_limited';
    case 503:
      return err instanceof StoreFullError ? 'store_full' : 'store_unavailable';
    default:
      return undefined;
  }
}

/** the memory store's size and bound, read when Prometheus scrapes: both O(1) */
export interface Sized {
  readonly size: number;
  readonly capacity: number;
}

export interface Metrics {
  readonly registry: Registry;
  /** the first middleware of the app: times each request and counts logins as they end */
  readonly requests: RequestHandler;
  /** names the route of a response no router route serves (express.static's files): a template, never a raw path */
  nameRoute(res: Response, template: string): void;
  /** counts sessions as they end, by the audit log's reason */
  readonly sessionEvents: Audit;
  /** times the store's operations and counts their failures, in place; returns the same store */
  instrumentStore<T extends IndexedStore>(store: T, kind: StoreKind): T;
  /** the same for the login counter of a shared store (its `increment`) */
  instrumentLoginCounter<T extends RateLimitStore>(counter: T, kind: StoreKind): T;
  /** `sessions_active` and `sessions_capacity`, from a store that knows both without a scan */
  watchSize(store: Sized): void;
}

type Callback = (err?: unknown, ...rest: unknown[]) => void;

/** one registry per server (never prom-client's global one, so two apps in one process keep their own counts) */
export function createMetrics(): Metrics {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry });
  const registers = [registry];

  const requestDuration = new Histogram({
    name: 'http_server_request_duration_seconds',
    help: 'Duration of HTTP server requests.',
    labelNames: ['http_request_method', 'http_route', 'http_response_status_code'] as const,
    buckets: REQUEST_BUCKETS,
    registers,
  });
  const logins = new Counter({
    name: 'sessions_logins_total',
    help: 'Login attempts (POST /login), by what they came to.',
    labelNames: ['result'] as const,
    registers,
  });
  const ended = new Counter({
    name: 'sessions_ended_total',
    help: 'Sessions ended, by reason, as the audit log tells them (a timeout on Redis when an instance notices it).',
    labelNames: ['reason'] as const,
    registers,
  });
  const storeDuration = new Histogram({
    name: 'sessions_store_operation_duration_seconds',
    help: 'Duration of session store operations, failed ones included.',
    labelNames: ['operation', 'store'] as const,
    buckets: STORE_BUCKETS,
    registers,
  });
  const storeErrors = new Counter({
    name: 'sessions_store_errors_total',
    help: 'Session store operations that failed (unreachable, past their deadline, an error reply), by operation.',
    labelNames: ['operation', 'store'] as const,
    registers,
  });
  // every label value known up front starts at 0, so a rate() sees its first increase
  for (const result of LOGIN_RESULTS) logins.labels(result).inc(0);
  for (const reason of END_REASONS) ended.labels(reason).inc(0);

  // one child per label set, kept: a request pays a map lookup, not a hash of its labels
  const children = new Map<string, Histogram.Internal<'http_request_method' | 'http_route' | 'http_response_status_code'>>();
  const observeRequest = (method: string, route: string, status: number, seconds: number) => {
    const key = `${method} ${status} ${route}`;
    let child = children.get(key);
    if (!child) {
      child = requestDuration.labels(method, route, String(status));
      children.set(key, child);
    }
    child.observe(seconds);
  };

  const requests: RequestHandler = (req, res, next) => {
    const started = performance.now();
    // 'close' comes once per response, whether it finished or the client went away first; a request whose client
    // left before its answer has no status to count (a login's own result included), so it is left out
    res.once('close', () => {
      if (!res.writableFinished) return;
      observeRequest(METHODS.has(req.method) ? req.method : '_OTHER', routeOf(req, res), res.statusCode, (performance.now() - started) / 1000);
      const result = loginResult(req, res);
      if (result) logins.labels(result).inc();
    });
    next();
  };

  const timed = (operation: string, kind: StoreKind) => {
    const duration = storeDuration.labels(operation, kind);
    const errors = storeErrors.labels(operation, kind);
    errors.inc(0);
    return {
      started: () => performance.now(),
      done(started: number, err: unknown) {
        duration.observe((performance.now() - started) / 1000);
        // a full memory store refuses a login: that is capacity (sessions_logins_total{result="store_full"}), not a failure
        if (err && !(err instanceof StoreFullError)) errors.inc();
      },
    };
  };

  // callback methods: the callback is the last argument, and optional for set, destroy and touch. A method the store
  // does not have stays absent (express-session skips a store's `touch` when there is none)
  const wrapCallback = (target: Record<string, unknown>, method: string, operation: string, kind: StoreKind) => {
    const original = target[method];
    if (typeof original !== 'function') return;
    const timer = timed(operation, kind);
    target[method] = function (this: unknown, ...args: unknown[]) {
      const started = timer.started();
      const last = args.length - 1;
      const callback = typeof args[last] === 'function' ? (args[last] as Callback) : undefined;
      const done: Callback = (err, ...rest) => {
        timer.done(started, err);
        callback?.(err, ...rest);
      };
      if (callback) args[last] = done;
      else args.push(done);
      return (original as (...rest: unknown[]) => unknown).apply(this, args);
    };
  };
  const wrapPromise = (target: Record<string, unknown>, method: string, operation: string, kind: StoreKind) => {
    const original = target[method] as (...args: unknown[]) => Promise<unknown>;
    const timer = timed(operation, kind);
    target[method] = async function (this: unknown, ...args: unknown[]) {
      const started = timer.started();
      try {
        const result = await original.apply(this, args);
        timer.done(started, undefined);
        return result;
      } catch (err) {
        timer.done(started, err);
        throw err;
      }
    };
  };

  return {
    registry,
    requests,
    nameRoute: (res, template) => namedRoutes.set(res, template),
    sessionEvents: ({ event, reason }) => {
      if (event === 'session_ended' && reason) ended.labels(reason).inc();
    },
    instrumentStore(store, kind) {
      const target = store as unknown as Record<string, unknown>;
      for (const method of ['get', 'set', 'touch', 'destroy']) wrapCallback(target, method, method, kind);
      for (const [method, operation] of [
        ['listSessions', 'list_sessions'],
        ['endSession', 'end_session'],
        ['endUserSessions', 'end_user_sessions'],
        ['endAllSessions', 'end_all_sessions'],
      ] as const) {
        wrapPromise(target, method, operation, kind);
      }
      return store;
    },
    instrumentLoginCounter(counter, kind) {
      wrapPromise(counter as unknown as Record<string, unknown>, 'increment', 'count_login', kind);
      return counter;
    },
    watchSize(store) {
      new Gauge({
        name: 'sessions_active',
        help: 'Sessions the memory store holds now (expired ones leave at its next sweep, within a minute).',
        registers,
        collect() {
          this.set(store.size);
        },
      });
      new Gauge({
        name: 'sessions_capacity',
        help: 'Most sessions the memory store holds (SESSION_MEMORY_MAX).',
        registers,
        collect() {
          this.set(store.capacity);
        },
      });
    },
  };
}
