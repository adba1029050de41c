import { isIP } from 'node:net';

export type LogLevel = 'silent' | 'error' | 'warn' | 'info' | 'debug';
export type LogFormat = 'pretty' | 'json';
export type CookieSecure = boolean | 'auto';
export type TrustProxy = boolean | number | string[];

/** a Redis node or sentinel, as REDIS_SENTINELS and REDIS_CLUSTER_NODES list them */
export interface HostPort {
  host: string;
  port: number;
}

/** credentials and TLS for the data nodes behind Sentinel or Cluster (a URL carries its own) */
export interface RedisAuth {
  username: string | undefined;
  password: string | undefined;
  tls: boolean;
}

/** where the Redis store is: one of REDIS_URL, REDIS_SENTINELS, REDIS_CLUSTER_NODES */
export type RedisTopology =
  | { kind: 'url'; url: string }
  | { kind: 'sentinel'; sentinels: HostPort[]; name: string; auth: RedisAuth }
  | { kind: 'cluster'; nodes: HostPort[]; auth: RedisAuth };

export interface Config {
  port: number;
  production: boolean;
  /** the first signs, all verify */
  secrets: string[];
  cookieName: string;
  idleTimeoutSeconds: number;
  absoluteTimeoutSeconds: number;
  cookieSecure: CookieSecure;
  trustProxy: TrustProxy;
  sessionStore: 'memory' | 'redis';
  redis: RedisTopology;
  sessionMemoryMax: number;
  loginRateLimitPerMinute: number;
  logLevel: LogLevel;
  /** human-readable lines (pino-pretty) or JSON */
  logFormat: LogFormat;
  /** the metrics and health listener's port; undefined: no such listener */
  metricsPort: number | undefined;
  metricsHost: string;
  /** origins (scheme://host[:port], as browsers send them) allowed to make unsafe cross-origin requests */
  trustedOrigins: string[];
  /** sessions one user may hold; a login past it ends that user's least recently seen */
  sessionMaxPerUser: number;
  /** the bearer token of the admin API; undefined turns the API off */
  adminToken: string | undefined;
  /** things worth saying at start-up that do not stop it */
  warnings: string[];
}

export type Env = Record<string, string | undefined>;

/** published in the tutorial, so never a secret */
export const TUTORIAL_SECRET = '8unto0n4oc7903zm';
export const DEVELOPMENT_SECRET = 'development-only-secret-never-use-in-production';
export const MIN_PRODUCTION_SECRET_LENGTH = 32;
export const MIN_ADMIN_TOKEN_LENGTH = 32;

const LOG_LEVELS: readonly LogLevel[] = ['silent', 'error', 'warn', 'info', 'debug'];
const TRUST_PROXY_NAMES = ['loopback', 'linklocal', 'uniquelocal'];
// RFC 6265 cookie-name: an RFC 7230 token
const COOKIE_NAME = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;
const ONE_YEAR_SECONDS = 365 * 24 * 60 * 60;

export class ConfigError extends Error {
  constructor(readonly problems: string[]) {
    super(`Invalid configuration:\n${problems.map((p) => `  - ${p}`).join('\n')}`);
    this.name = 'ConfigError';
  }
}

/** whether a package can be loaded (pino-pretty is a dev dependency: a production install has none) */
export function installed(name: string): boolean {
  try {
    require.resolve(name);
    return true;
  } catch {
    return false;
  }
}

/**
 * Reads the configuration from an environment map; no I/O but asking `isInstalled` whether pino-pretty is there.
 * Collects every problem and throws one ConfigError naming each bad variable.
 */
export function loadConfig(env: Env, isInstalled: (name: string) => boolean = installed): Readonly<Config> {
  const problems: string[] = [];
  const warnings: string[] = [];
  // an empty value (`NAME=` in a .env file) means "use the default"
  const read = (name: string): string | undefined => {
    const value = env[name]?.trim();
    return value === '' ? undefined : value;
  };
  const integer = (name: string, fallback: number, min: number, max: number): number => {
    const raw = read(name);
    if (raw === undefined) return fallback;
    const value = /^\d+$/.test(raw) ? Number(raw) : Number.NaN;
    if (!(value >= min && value <= max)) {
      problems.push(`${name} must be a whole number from ${min} to ${max} (got "${raw}")`);
      return fallback;
    }
    return value;
  };
  const oneOf = <T extends string>(name: string, allowed: readonly T[], fallback: T): T => {
    const raw = read(name);
    if (raw === undefined) return fallback;
    if (!(allowed as readonly string[]).includes(raw)) {
      problems.push(`${name} must be one of ${allowed.join(', ')} (got "${raw}")`);
      return fallback;
    }
    return raw as T;
  };

  const production = read('NODE_ENV') === 'production';

  const port = integer('APPLICATION_PORT', 7501, 0, 65535);
  const secrets = readSecrets(read('SESSION_SECRET'), production, problems, warnings);

  const idleTimeoutSeconds = integer('SESSION_IDLE_TIMEOUT_SECONDS', 1800, 1, ONE_YEAR_SECONDS);
  const absoluteTimeoutSeconds = integer('SESSION_ABSOLUTE_TIMEOUT_SECONDS', 28800, 1, ONE_YEAR_SECONDS);

  const secure = oneOf('COOKIE_SECURE', ['true', 'false', 'auto'], production ? 'true' : 'false');
  const cookieSecure: CookieSecure = secure === 'auto' ? 'auto' : secure === 'true';
  if (production && cookieSecure === false) {
    warnings.push('COOKIE_SECURE=false in production: the session cookie will also travel over plain HTTP');
  }

  const cookieName = readCookieName(read('SESSION_COOKIE_NAME'), cookieSecure, problems);

  const trustProxy = readTrustProxy(read('TRUST_PROXY'), problems);
  if (trustsEveryAddress(trustProxy)) {
    const why =
      `TRUST_PROXY=${read('TRUST_PROXY')} trusts every hop, so any client can forge X-Forwarded-For and get a fresh login limit with each value: ` +
      'give the number of proxies in front of the server (1) or their addresses (loopback, 10.0.0.0/8)';
    (production ? problems : warnings).push(why);
  }
  const sessionStore = oneOf('SESSION_STORE', ['memory', 'redis'], 'memory');

  const redis = readRedisTopology(read, problems);

  const sessionMemoryMax = integer('SESSION_MEMORY_MAX', 100_000, 1, 100_000_000);
  const loginRateLimitPerMinute = integer('LOGIN_RATE_LIMIT_PER_MINUTE', 20, 0, 1_000_000);
  const logLevel = oneOf('LOG_LEVEL', LOG_LEVELS, 'info');
  const prettyInstalled = isInstalled('pino-pretty');
  const logFormat = oneOf<LogFormat>('LOG_FORMAT', ['pretty', 'json'], !production && prettyInstalled ? 'pretty' : 'json');
  if (read('LOG_FORMAT') === 'pretty' && !prettyInstalled) {
    problems.push('LOG_FORMAT=pretty needs pino-pretty, which is not installed (a development dependency: npm install, or LOG_FORMAT=json)');
  }
  const metricsPort = read('METRICS_PORT') === undefined ? undefined : integer('METRICS_PORT', 0, 1, 65535);
  if (metricsPort !== undefined && metricsPort === port) problems.push(`METRICS_PORT must differ from APPLICATION_PORT (both ${port})`);
  const metricsHost = read('METRICS_HOST') ?? '127.0.0.1';
  if (!isIP(metricsHost) && !/^[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*$/.test(metricsHost)) {
    problems.push(`METRICS_HOST must be an IP address or a host name (got "${metricsHost}")`);
  }
  const trustedOrigins = readTrustedOrigins(read('TRUSTED_ORIGINS'), problems);
  const sessionMaxPerUser = integer('SESSION_MAX_PER_USER', 50, 1, 10_000);
  const adminToken = read('ADMIN_TOKEN');
  if (adminToken !== undefined && adminToken.length < MIN_ADMIN_TOKEN_LENGTH) {
    const why = `ADMIN_TOKEN must be at least ${MIN_ADMIN_TOKEN_LENGTH} characters (got ${adminToken.length}): it is all that guards ending everyone's sessions`;
    (production ? problems : warnings).push(why);
  }

  if (problems.length > 0) throw new ConfigError(problems);
  return Object.freeze({
    port,
    production,
    secrets,
    cookieName,
    idleTimeoutSeconds,
    absoluteTimeoutSeconds,
    cookieSecure,
    trustProxy,
    sessionStore,
    redis,
    sessionMemoryMax,
    loginRateLimitPerMinute,
    logLevel,
    logFormat,
    metricsPort,
    metricsHost,
    trustedOrigins,
    sessionMaxPerUser,
    adminToken,
    warnings,
  });
}

function readSecrets(raw: string | undefined, production: boolean, problems: string[], warnings: string[]): string[] {
  if (raw === undefined) {
    if (production) {
      problems.push(`SESSION_SECRET is required in production (at least ${MIN_PRODUCTION_SECRET_LENGTH} random characters)`);
    } else {
      warnings.push('SESSION_SECRET is not set: using a fixed development secret; never do this in production');
    }
    return [DEVELOPMENT_SECRET];
  }
  const secrets = raw.split(',').map((secret) => secret.trim());
  if (secrets.some((secret) => secret === '')) {
    problems.push('SESSION_SECRET has an empty entry in its comma-separated list');
    return secrets;
  }
  const published = secrets.some((secret) => secret === TUTORIAL_SECRET || secret === DEVELOPMENT_SECRET);
  if (production) {
    if (published) {
      problems.push('SESSION_SECRET must not be a published secret (the tutorial\'s fallback or the development secret)');
    }
    if (secrets.some((secret) => secret.length < MIN_PRODUCTION_SECRET_LENGTH)) {
      problems.push(`SESSION_SECRET must be at least ${MIN_PRODUCTION_SECRET_LENGTH} characters per secret in production`);
    }
  } else if (published) {
    warnings.push('SESSION_SECRET is a published secret; production refuses it');
  }
  return secrets;
}

// a cookie with one of these prefixes is refused by browsers unless it is Secure (RFC 6265bis; case-insensitive)
const SECURE_PREFIX = /^__(host|secure)-/i;

/**
 * `__Host-sid` when the cookie is always Secure: the browser then refuses it without Secure, with a Domain or with
 * a Path other than /, so a sibling subdomain can neither plant nor overwrite it (OWASP's recommended prefix).
 */
function readCookieName(raw: string | undefined, cookieSecure: CookieSecure, problems: string[]): string {
  if (raw === undefined) return cookieSecure === true ? '__Host-sid' : 'sid';
  if (!COOKIE_NAME.test(raw)) {
    problems.push(`SESSION_COOKIE_NAME must be a cookie name token (letters, digits, !#$%&'*+-.^_\`|~) (got "${raw}")`);
  } else if (raw === 'connect.sid') {
    problems.push('SESSION_COOKIE_NAME must not be the framework default "connect.sid", which tells attackers what runs here');
  } else if (SECURE_PREFIX.test(raw) && cookieSecure !== true) {
    problems.push(
      `SESSION_COOKIE_NAME "${raw}" needs COOKIE_SECURE=true: browsers drop a cookie with the __Host- or __Secure- prefix unless it is Secure`,
    );
  }
  return raw;
}

/** each entry an exact origin: http(s) scheme, host, optional port; no path, query, fragment or credentials */
function readTrustedOrigins(raw: string | undefined, problems: string[]): string[] {
  if (raw === undefined) return [];
  const origins: string[] = [];
  for (const entry of raw.split(',').map((part) => part.trim())) {
    const origin = parseOrigin(entry);
    if (origin === undefined) {
      problems.push(
        `TRUSTED_ORIGINS must be a comma-separated list of origins like https://app.example.com (scheme, host, optional port; no path) (got "${entry}")`,
      );
    } else {
      origins.push(origin);
    }
  }
  return origins;
}

// a host name (letters, digits, dots, hyphens) or a bracketed IPv6 address: no wildcard, which would never match
const ORIGIN_HOST = /^([a-z0-9-]+(\.[a-z0-9-]+)*|\[[0-9a-f:.]+\])$/;

// the origin as a browser sends it in `Origin` (lower-case host, default port left out), or undefined
function parseOrigin(entry: string): string | undefined {
  // nothing after the authority: URL() would accept and drop a lone "/", a "?" or a "#"
  if (!/^https?:\/\/[^/?#@\s]+$/i.test(entry)) return undefined;
  try {
    const url = new URL(entry);
    return ORIGIN_HOST.test(url.hostname) ? url.origin : undefined;
  } catch {
    return undefined;
  }
}

function readTrustProxy(raw: string | undefined, problems: string[]): TrustProxy {
  if (raw === undefined || raw === 'false') return false;
  if (raw === 'true') return true;
  if (/^\d+$/.test(raw)) return Number(raw);
  const entries = raw.split(',').map((entry) => entry.trim());
  const valid = entries.every((entry) => TRUST_PROXY_NAMES.includes(entry) || isAddressOrSubnet(entry));
  if (!valid) {
    problems.push(
      `TRUST_PROXY must be true, false, a hop count, or a comma-separated list of ${TRUST_PROXY_NAMES.join('/')}, IP addresses and subnets (got "${raw}")`,
    );
    return false;
  }
  return entries;
}

// `true`, or a list holding a /0 subnet (0.0.0.0/0, ::/0), which trusts every address the same way
function trustsEveryAddress(trustProxy: TrustProxy): boolean {
  return trustProxy === true || (Array.isArray(trustProxy) && trustProxy.some((entry) => /\/0+$/.test(entry)));
}

function isAddressOrSubnet(entry: string): boolean {
  const [address = '', bits, ...rest] = entry.split('/');
  const version = isIP(address);
  if (version === 0 || rest.length > 0) return false;
  if (bits === undefined) return true;
  return /^\d+$/.test(bits) && Number(bits) <= (version === 4 ? 32 : 128);
}

const REDIS_TOPOLOGY_VARIABLES = ['REDIS_URL', 'REDIS_SENTINELS', 'REDIS_CLUSTER_NODES'];

/** at most one of the three ways to Redis; none is REDIS_URL's default. Read whatever SESSION_STORE says */
function readRedisTopology(read: (name: string) => string | undefined, problems: string[]): RedisTopology {
  const given = REDIS_TOPOLOGY_VARIABLES.filter((name) => read(name) !== undefined);
  if (given.length > 1) problems.push(`only one of ${given.join(', ')} may be set: each names a whole Redis deployment`);

  const tls = read('REDIS_TLS') ?? 'false';
  if (tls !== 'true' && tls !== 'false') problems.push(`REDIS_TLS must be one of true, false (got "${tls}")`);
  const auth: RedisAuth = { username: read('REDIS_USERNAME'), password: read('REDIS_PASSWORD'), tls: tls === 'true' };
  const name = read('REDIS_SENTINEL_NAME');

  const sentinels = read('REDIS_SENTINELS');
  const clusterNodes = read('REDIS_CLUSTER_NODES');
  if (sentinels === undefined && name !== undefined) problems.push('REDIS_SENTINEL_NAME is set, but REDIS_SENTINELS is not');
  if (sentinels === undefined && clusterNodes === undefined) {
    const extras = ['REDIS_USERNAME', 'REDIS_PASSWORD', 'REDIS_TLS'].filter((variable) => read(variable) !== undefined);
    if (extras.length > 0) {
      problems.push(
        `${extras.join(', ')} ${extras.length === 1 ? 'applies' : 'apply'} only to REDIS_SENTINELS or REDIS_CLUSTER_NODES; with REDIS_URL, put them in the URL (rediss://user:password@host:port)`,
      );
    }
  }
  if (sentinels !== undefined) {
    if (name !== undefined && !/^\S+$/.test(name)) problems.push(`REDIS_SENTINEL_NAME must be one word (got "${name}")`);
    return { kind: 'sentinel', sentinels: readNodes('REDIS_SENTINELS', sentinels, problems), name: name ?? 'mymaster', auth };
  }
  if (clusterNodes !== undefined) return { kind: 'cluster', nodes: readNodes('REDIS_CLUSTER_NODES', clusterNodes, problems), auth };

  const url = read('REDIS_URL') ?? 'redis://127.0.0.1:6379';
  if (!isRedisUrl(url)) problems.push(`REDIS_URL must be a redis:// or rediss:// URL (got "${maskUrlPassword(url)}")`);
  return { kind: 'url', url };
}

/** `host:port,host:port,...`; an IPv6 address in brackets: `[::1]:6379` */
function readNodes(variable: string, raw: string, problems: string[]): HostPort[] {
  const nodes: HostPort[] = [];
  for (const entry of raw.split(',').map((part) => part.trim())) {
    const match = /^(?:\[([0-9A-Fa-f:.]+)\]|([^\s:[\]/@]+)):(\d{1,5})$/.exec(entry);
    const port = Number(match?.[3]);
    if (!match || port < 1 || port > 65535) {
      // whatever precedes an @ may be credentials: never printed
      problems.push(`${variable} must be a comma-separated list of host:port (got "${entry.replace(/^.*@/, '***@')}")`);
      continue;
    }
    nodes.push({ host: match[1] ?? match[2]!, port });
  }
  return nodes;
}

/** the nodes as a message shows them */
export function describeNodes(nodes: HostPort[]): string {
  return nodes.map(({ host, port }) => (host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`)).join(',');
}

function isRedisUrl(value: string): boolean {
  try {
    const url = new URL(value);
    return (url.protocol === 'redis:' || url.protocol === 'rediss:') && url.hostname !== '';
  } catch {
    return false;
  }
}

/** the URL as it may be logged: any password replaced by *** */
export function maskUrlPassword(value: string): string {
  try {
    const url = new URL(value);
    if (url.password) url.password = '***';
    return url.toString();
  } catch {
    // not a URL: hide everything between "://" and "@", where credentials would be
    return value.replace(/\/\/[^@/]*@/, '//***@');
  }
}
