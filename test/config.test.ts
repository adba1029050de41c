import { readFileSync } from 'node:fs';
import path from 'node:path';
import { ConfigError, DEVELOPMENT_SECRET, loadConfig, maskUrlPassword, TUTORIAL_SECRET, type Env } from '../src/config';
import { ROOT } from './processes';

const STRONG = 'x'.repeat(32);
const production = (env: Env = {}): Env => ({ NODE_ENV: 'production', SESSION_SECRET: STRONG, ...env });

function problemsOf(env: Env): string[] {
  try {
    loadConfig(env);
  } catch (err) {
    if (err instanceof ConfigError) return err.problems;
    throw err;
  }
  throw new Error('expected loadConfig to throw a ConfigError');
}

describe('loadConfig', () => {
  it('when nothing is set, then every documented default applies', () => {
    const config = loadConfig({});

    expect(config).toMatchObject({
      port: 7501,
      production: false,
      secrets: [DEVELOPMENT_SECRET],
      cookieName: 'sid',
      idleTimeoutSeconds: 1800,
      absoluteTimeoutSeconds: 28800,
      cookieSecure: false,
      trustProxy: false,
      sessionStore: 'memory',
      redis: { kind: 'url', url: 'redis://127.0.0.1:6379' },
      sessionMemoryMax: 100000,
      loginRateLimitPerMinute: 20,
      logLevel: 'info',
      trustedOrigins: [],
    });
    expect(config.warnings.join('\n')).toMatch(/SESSION_SECRET is not set/);
  });

  it('when every variable is set, then each is read', () => {
    const config = loadConfig({
      APPLICATION_PORT: '8080',
      NODE_ENV: 'production',
      SESSION_SECRET: `${STRONG}, ${'y'.repeat(40)}`,
      SESSION_COOKIE_NAME: '__Host-session',
      SESSION_IDLE_TIMEOUT_SECONDS: '60',
      SESSION_ABSOLUTE_TIMEOUT_SECONDS: '600',
      COOKIE_SECURE: 'true',
      TRUST_PROXY: 'loopback, 10.0.0.0/8',
      SESSION_STORE: 'redis',
      REDIS_URL: 'redis://:pw@cache:6380/2',
      SESSION_MEMORY_MAX: '5',
      LOGIN_RATE_LIMIT_PER_MINUTE: '0',
      LOG_LEVEL: 'debug',
      TRUSTED_ORIGINS: 'https://sso.example.com, HTTP://Front.Example.com:8080, https://app.example.com:443',
    });

    expect(config).toMatchObject({
      port: 8080,
      production: true,
      secrets: [STRONG, 'y'.repeat(40)],
      cookieName: '__Host-session',
      idleTimeoutSeconds: 60,
      absoluteTimeoutSeconds: 600,
      cookieSecure: true,
      trustProxy: ['loopback', '10.0.0.0/8'],
      sessionStore: 'redis',
      redis: { kind: 'url', url: 'redis://:pw@cache:6380/2' },
      sessionMemoryMax: 5,
      loginRateLimitPerMinute: 0,
      logLevel: 'debug',
      // as browsers send them in Origin: lower case, default port left out
      trustedOrigins: ['https://sso.example.com', 'http://front.example.com:8080', 'https://app.example.com'],
      warnings: [],
    });
  });

  it('when a value is empty (NAME= in .env), then the default applies', () => {
    expect(loadConfig({ APPLICATION_PORT: '', LOG_LEVEL: ' ' })).toMatchObject({ port: 7501, logLevel: 'info' });
  });

  it('when the result is returned, then it is frozen', () => {
    expect(Object.isFrozen(loadConfig({}))).toBe(true);
  });

  it.each([
    ['APPLICATION_PORT', 'abc'],
    ['APPLICATION_PORT', '70000'],
    ['APPLICATION_PORT', '-1'],
    ['APPLICATION_PORT', '80.5'],
    ['SESSION_IDLE_TIMEOUT_SECONDS', '0'],
    ['SESSION_IDLE_TIMEOUT_SECONDS', '30m'],
    ['SESSION_ABSOLUTE_TIMEOUT_SECONDS', 'forever'],
    ['SESSION_MEMORY_MAX', '0'],
    ['LOGIN_RATE_LIMIT_PER_MINUTE', 'lots'],
    ['COOKIE_SECURE', 'yes'],
    ['SESSION_STORE', 'postgres'],
    ['REDIS_URL', 'http://127.0.0.1:6379'],
    ['REDIS_URL', 'not a url'],
    ['REDIS_SENTINELS', 'sentinel-a'],
    ['REDIS_SENTINELS', 'sentinel-a:26379,,sentinel-b:26379'],
    ['REDIS_CLUSTER_NODES', 'node-a:0'],
    ['REDIS_CLUSTER_NODES', 'redis://node-a:6379'],
    ['REDIS_SENTINEL_NAME', 'mymaster'],
    ['REDIS_PASSWORD', 'secret'],
    ['LOG_LEVEL', 'verbose'],
    ['TRUST_PROXY', 'everyone'],
    ['TRUST_PROXY', '10.0.0.0/33'],
    ['SESSION_COOKIE_NAME', 'has space'],
    ['SESSION_COOKIE_NAME', 'semi;colon'],
    ['SESSION_COOKIE_NAME', 'connect.sid'],
    ['SESSION_SECRET', 'a,,b'],
  ])('when %s is %j, then start-up is refused naming it', (name, value) => {
    const problems = problemsOf({ [name]: value });

    expect(problems).toHaveLength(1);
    expect(problems[0]).toContain(name);
  });

  it('when several values are bad, then one error names every one of them', () => {
    let error: unknown;
    try {
      loadConfig({ APPLICATION_PORT: 'abc', LOG_LEVEL: 'loud', SESSION_STORE: 'disk' });
    } catch (err) {
      error = err;
    }

    expect(error).toBeInstanceOf(ConfigError);
    const message = (error as ConfigError).message;
    expect(message).toContain('APPLICATION_PORT');
    expect(message).toContain('LOG_LEVEL');
    expect(message).toContain('SESSION_STORE');
  });

  it.each([
    ['1', 1],
    ['true', true],
    ['false', false],
    ['loopback', ['loopback']],
    ['127.0.0.1, ::1, fd00::/8', ['127.0.0.1', '::1', 'fd00::/8']],
  ])('when TRUST_PROXY is %j, then Express gets %j', (value, expected) => {
    expect(loadConfig({ TRUST_PROXY: value }).trustProxy).toEqual(expected);
  });

  describe('in production', () => {
    it('when the secret is missing, then start-up is refused naming SESSION_SECRET', () => {
      expect(problemsOf({ NODE_ENV: 'production' }).join()).toMatch(/SESSION_SECRET is required/);
    });

    it('when the secret is shorter than 32 characters, then start-up is refused', () => {
      expect(problemsOf(production({ SESSION_SECRET: 'x'.repeat(31) })).join()).toMatch(/SESSION_SECRET must be at least 32/);
    });

    it('when any secret of the list is short, then start-up is refused', () => {
      expect(problemsOf(production({ SESSION_SECRET: `${STRONG},short` })).join()).toMatch(/SESSION_SECRET/);
    });

    it("when the secret is the tutorial's published fallback, then start-up is refused", () => {
      expect(problemsOf(production({ SESSION_SECRET: TUTORIAL_SECRET })).join()).toMatch(/SESSION_SECRET must not be a published secret/);
    });

    it("when the tutorial's fallback is padded into the list, then start-up is still refused", () => {
      expect(problemsOf(production({ SESSION_SECRET: `${STRONG},${TUTORIAL_SECRET}` })).join()).toMatch(/published/);
    });

    it('when the development secret is used, then start-up is refused', () => {
      expect(problemsOf(production({ SESSION_SECRET: DEVELOPMENT_SECRET })).join()).toMatch(/published/);
    });

    it('when the secret is strong, then the cookie is Secure by default', () => {
      expect(loadConfig(production()).cookieSecure).toBe(true);
    });

    it.each(['true', '0.0.0.0/0', 'loopback, ::/0'])('when TRUST_PROXY=%s (any client could forge X-Forwarded-For), then start-up stops saying what to give instead', (value) => {
      expect(problemsOf(production({ TRUST_PROXY: value }))).toEqual([expect.stringMatching(/^TRUST_PROXY=.* trusts every hop.*number of proxies/)]);
    });

    it('when TRUST_PROXY names real subnets, then it starts', () => {
      expect(loadConfig(production({ TRUST_PROXY: '10.0.0.0/8, 127.0.0.1/32' })).trustProxy).toEqual(['10.0.0.0/8', '127.0.0.1/32']);
    });

    it('when COOKIE_SECURE=false, then it starts with a warning', () => {
      expect(loadConfig(production({ COOKIE_SECURE: 'false' })).warnings.join()).toMatch(/COOKIE_SECURE=false/);
    });
  });

  it('when TRUST_PROXY=true outside production, then it starts, with a warning', () => {
    const config = loadConfig({ TRUST_PROXY: 'true' });

    expect(config.trustProxy).toBe(true);
    expect(config.warnings.join()).toMatch(/TRUST_PROXY=true trusts every hop/);
  });

  it("when outside production the tutorial's secret is used, then it starts with a warning", () => {
    const config = loadConfig({ SESSION_SECRET: TUTORIAL_SECRET });

    expect(config.secrets).toEqual([TUTORIAL_SECRET]);
    expect(config.warnings.join()).toMatch(/published/);
  });
});

describe('the session cookie name', () => {
  it('when COOKIE_SECURE=true (production\'s default) and no name is given, then it is __Host-sid', () => {
    expect(loadConfig(production()).cookieName).toBe('__Host-sid');
    expect(loadConfig({ COOKIE_SECURE: 'true' }).cookieName).toBe('__Host-sid');
  });

  it.each([
    ['COOKIE_SECURE=false', production({ COOKIE_SECURE: 'false' })],
    ['COOKIE_SECURE=auto', production({ COOKIE_SECURE: 'auto' })],
    ['development', {}],
  ])('when %s and no name is given, then it is sid (a browser would drop __Host- without Secure)', (_what, env) => {
    expect(loadConfig(env).cookieName).toBe('sid');
  });

  it.each([
    ['__Host-sid', 'auto'],
    ['__Host-sid', 'false'],
    ['__host-app', 'auto'],
    ['__Secure-sid', 'false'],
  ])('when SESSION_COOKIE_NAME=%s with COOKIE_SECURE=%s, then start-up stops saying why', (name, secure) => {
    expect(problemsOf({ SESSION_COOKIE_NAME: name, COOKIE_SECURE: secure })).toEqual([
      expect.stringMatching(/^SESSION_COOKIE_NAME ".*" needs COOKIE_SECURE=true: browsers drop .* unless it is Secure$/),
    ]);
  });

  it('when a __Host- name is given with COOKIE_SECURE=true, then it is used', () => {
    expect(loadConfig({ SESSION_COOKIE_NAME: '__Host-app', COOKIE_SECURE: 'true' }).cookieName).toBe('__Host-app');
  });
});

describe('TRUSTED_ORIGINS', () => {
  it.each([
    'https://app.example.com/',
    'https://app.example.com/callback',
    'https://app.example.com?x=1',
    'https://app.example.com#top',
    'app.example.com',
    '//app.example.com',
    'ftp://app.example.com',
    'https://',
    'https://user:pw@app.example.com',
    'https://app.example.com:99999',
    'null',
    '*',
    'https://*.example.com',
    'https://app_example.com',
  ])('when an entry is %s, then start-up stops naming TRUSTED_ORIGINS', (entry) => {
    expect(problemsOf({ TRUSTED_ORIGINS: `https://ok.example.com,${entry}` })).toEqual([expect.stringMatching(/^TRUSTED_ORIGINS must be/)]);
  });

  it('when an entry is empty, then start-up stops naming TRUSTED_ORIGINS', () => {
    expect(problemsOf({ TRUSTED_ORIGINS: 'https://a.example.com,,https://b.example.com' }).join()).toMatch(/TRUSTED_ORIGINS/);
  });
});

describe('ADMIN_TOKEN and SESSION_MAX_PER_USER', () => {
  it('when neither is set, then the admin API is off and a user holds at most 50 sessions', () => {
    const config = loadConfig({});

    expect(config.adminToken).toBeUndefined();
    expect(config.sessionMaxPerUser).toBe(50);
  });

  it('when ADMIN_TOKEN has 32 characters or more, then it is taken as it is', () => {
    expect(loadConfig(production({ ADMIN_TOKEN: 'a'.repeat(32) })).adminToken).toBe('a'.repeat(32));
  });

  it('when ADMIN_TOKEN is shorter than 32 characters in production, then start-up stops naming it (never its value)', () => {
    const problems = problemsOf(production({ ADMIN_TOKEN: 'short-token-value' }));

    expect(problems).toEqual([expect.stringMatching(/^ADMIN_TOKEN must be at least 32 characters \(got 17\)/)]);
    expect(problems.join()).not.toContain('short-token-value');
  });

  it('when ADMIN_TOKEN is short outside production, then start-up warns and goes on', () => {
    const config = loadConfig({ ADMIN_TOKEN: 'short' });

    expect(config.warnings).toContainEqual(expect.stringMatching(/^ADMIN_TOKEN must be at least 32/));
    expect(config.adminToken).toBe('short');
  });

  it.each(['0', '10001', 'many', '-1'])('when SESSION_MAX_PER_USER is %s, then start-up stops naming it', (value) => {
    expect(problemsOf({ SESSION_MAX_PER_USER: value })).toEqual([expect.stringMatching(/^SESSION_MAX_PER_USER must be a whole number from 1 to 10000/)]);
  });

  it.each(['1', '10000'])('when SESSION_MAX_PER_USER is %s, then it is taken', (value) => {
    expect(loadConfig({ SESSION_MAX_PER_USER: value }).sessionMaxPerUser).toBe(Number(value));
  });
});

describe('the Redis topology', () => {
  it('when REDIS_SENTINELS is set, then the sentinels, the master name (mymaster by default) and the data nodes\' credentials are read', () => {
    expect(loadConfig({ REDIS_SENTINELS: 'sentinel-a:26379, 10.0.0.2:26380,[::1]:26381' }).redis).toEqual({
      kind: 'sentinel',
      sentinels: [
        { host: 'sentinel-a', port: 26379 },
        { host: '10.0.0.2', port: 26380 },
        { host: '::1', port: 26381 },
      ],
      name: 'mymaster',
      auth: { username: undefined, password: undefined, tls: false },
    });
    expect(
      loadConfig({ REDIS_SENTINELS: 's:1', REDIS_SENTINEL_NAME: 'sessions', REDIS_USERNAME: 'app', REDIS_PASSWORD: 'pw', REDIS_TLS: 'true' }).redis,
    ).toMatchObject({ name: 'sessions', auth: { username: 'app', password: 'pw', tls: true } });
  });

  it('when REDIS_CLUSTER_NODES is set, then its nodes are read', () => {
    expect(loadConfig({ REDIS_CLUSTER_NODES: 'node-a:7000,node-b:7001', REDIS_PASSWORD: 'pw' }).redis).toEqual({
      kind: 'cluster',
      nodes: [
        { host: 'node-a', port: 7000 },
        { host: 'node-b', port: 7001 },
      ],
      auth: { username: undefined, password: 'pw', tls: false },
    });
  });

  it.each([
    [{ REDIS_URL: 'redis://r:6379', REDIS_SENTINELS: 's:26379' }, 'REDIS_URL, REDIS_SENTINELS'],
    [{ REDIS_SENTINELS: 's:26379', REDIS_CLUSTER_NODES: 'n:7000' }, 'REDIS_SENTINELS, REDIS_CLUSTER_NODES'],
    [{ REDIS_URL: 'redis://r:6379', REDIS_SENTINELS: 's:26379', REDIS_CLUSTER_NODES: 'n:7000' }, 'REDIS_URL, REDIS_SENTINELS, REDIS_CLUSTER_NODES'],
  ])('when more than one way to Redis is given (%j), then start-up stops naming them', (env, named) => {
    expect(problemsOf(env)).toEqual([expect.stringContaining(`only one of ${named} may be set`)]);
  });

  it('when REDIS_TLS is neither true nor false, then start-up stops naming it', () => {
    expect(problemsOf({ REDIS_CLUSTER_NODES: 'n:7000', REDIS_TLS: 'yes' })).toEqual([expect.stringMatching(/^REDIS_TLS must be one of true, false/)]);
  });

  it.each(['REDIS_SENTINELS', 'REDIS_CLUSTER_NODES'])('when %s holds credentials, then the refusal does not print them', (variable) => {
    const problems = problemsOf({ [variable]: 'redis://app:hunter2@node-a:7000,node-b:7001' });

    expect(problems).toEqual([expect.stringContaining(`${variable} must be a comma-separated list of host:port (got "***@node-a:7000")`)]);
    expect(problems.join('')).not.toContain('hunter2');
  });

  it('when none is given, then REDIS_URL\'s default is used', () => {
    expect(loadConfig({ SESSION_STORE: 'redis' }).redis).toEqual({ kind: 'url', url: 'redis://127.0.0.1:6379' });
  });
});

describe('operability variables', () => {
  const notInstalled = () => false;

  it('when nothing is set, then there is no metrics listener, and lines are pretty outside production and JSON in it', () => {
    expect(loadConfig({})).toEqual(expect.objectContaining({ metricsPort: undefined, metricsHost: '127.0.0.1', logFormat: 'pretty' }));
    expect(loadConfig({ NODE_ENV: 'production', SESSION_SECRET: 'x'.repeat(40) }).logFormat).toBe('json');
  });

  it('when pino-pretty is not installed, then the default is JSON, and LOG_FORMAT=pretty stops start-up naming LOG_FORMAT', () => {
    expect(loadConfig({}, notInstalled).logFormat).toBe('json');
    expect(loadConfig({ LOG_FORMAT: 'json' }, notInstalled).logFormat).toBe('json');
    expect(() => loadConfig({ LOG_FORMAT: 'pretty' }, notInstalled)).toThrow(/LOG_FORMAT=pretty needs pino-pretty, which is not installed/);
  });

  it('when LOG_FORMAT is set, then it wins over the default either way', () => {
    expect(loadConfig({ LOG_FORMAT: 'json' }).logFormat).toBe('json');
    expect(loadConfig({ LOG_FORMAT: 'pretty', NODE_ENV: 'production', SESSION_SECRET: 'x'.repeat(40) }).logFormat).toBe('pretty');
  });

  it('when METRICS_PORT and METRICS_HOST are set, then they are read', () => {
    expect(loadConfig({ METRICS_PORT: '9464', METRICS_HOST: '0.0.0.0' })).toEqual(expect.objectContaining({ metricsPort: 9464, metricsHost: '0.0.0.0' }));
    expect(loadConfig({ METRICS_PORT: '9464', METRICS_HOST: 'metrics.internal' }).metricsHost).toBe('metrics.internal');
  });

  it.each([
    ['METRICS_PORT', { METRICS_PORT: 'abc' }, /METRICS_PORT must be a whole number from 1 to 65535/],
    ['METRICS_PORT', { METRICS_PORT: '0' }, /METRICS_PORT must be a whole number from 1 to 65535/],
    ['METRICS_PORT', { METRICS_PORT: '70000' }, /METRICS_PORT must be a whole number from 1 to 65535/],
    ['METRICS_PORT', { METRICS_PORT: '7501' }, /METRICS_PORT must differ from APPLICATION_PORT/],
    ['METRICS_HOST', { METRICS_PORT: '9464', METRICS_HOST: 'http://x' }, /METRICS_HOST must be an IP address or a host name/],
    ['LOG_FORMAT', { LOG_FORMAT: 'xml' }, /LOG_FORMAT must be one of pretty, json/],
  ])('when %s is invalid, then start-up stops naming it', (_name, env, message) => {
    expect(() => loadConfig(env)).toThrow(message);
  });
});

describe('.env.example', () => {
  const example = readFileSync(path.join(ROOT, '.env.example'), 'utf8');
  const set = Object.fromEntries(
    example
      .split('\n')
      .filter((line) => /^[A-Z_]+=/.test(line))
      .map((line) => [line.slice(0, line.indexOf('=')), line.slice(line.indexOf('=') + 1)]),
  );

  it('when copied to .env as it is, then it is a valid configuration', () => {
    expect(() => loadConfig(set)).not.toThrow();
  });

  it('when the README lists a variable, then .env.example has a line for it (set or commented out)', () => {
    const readme = readFileSync(path.join(ROOT, 'README.md'), 'utf8');
    const table = readme.slice(readme.indexOf('## Configuration'), readme.indexOf('## Postman'));
    const documented = [...table.matchAll(/^\| `([A-Z_]+)`(?:, `([A-Z_]+)`)?(?:, `([A-Z_]+)`)?/gm)].flatMap((m) => m.slice(1).filter(Boolean));
    expect(documented.length).toBeGreaterThan(15);
    for (const name of documented) expect(example).toMatch(new RegExp(`^#?${name}=`, 'm'));
  });

  it('when each of the three ways to Redis is uncommented alone, then the configuration is valid', () => {
    for (const name of ['REDIS_URL', 'REDIS_SENTINELS', 'REDIS_CLUSTER_NODES']) {
      const line = new RegExp(`^#${name}=(.*)$`, 'm').exec(example);
      expect(line).not.toBeNull();
      expect(() => loadConfig({ ...set, SESSION_STORE: 'redis', [name]: line![1] })).not.toThrow();
    }
  });
});

describe('maskUrlPassword', () => {
  it.each([
    ['redis://:hunter2@cache:6379', 'redis://:***@cache:6379'],
    ['redis://user:hunter2@cache:6379/1', 'redis://user:***@cache:6379/1'],
    ['redis://127.0.0.1:6379', 'redis://127.0.0.1:6379'],
    ['not a url://user:hunter2@x', 'not a url://***@x'],
  ])('when the URL is %s, then it is shown as %s', (url, shown) => {
    expect(maskUrlPassword(url)).toBe(shown);
  });
});
