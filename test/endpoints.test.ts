import request from 'supertest';
import { makeApp, sessionId, shouldNotSetCookie, shouldSetCookie, storedCount, storedSession } from './helpers';

describe('POST /login', () => {
  it('when the name is valid, then 201 with the info message and a session cookie', async () => {
    const { app } = makeApp();

    const res = await request(app).post('/login?name=daniel');

    expect(res.status).toBe(201);
    expect(res.headers['content-type']).toMatch(/^application\/json/);
    expect(res.body).toEqual({ info: 'User logged in' });
    shouldSetCookie(res, 'sid');
  });

  it('when the name has spaces around it, then it is stored trimmed', async () => {
    const agent = request.agent(makeApp().app);

    await agent.post('/login').query({ name: '  daniel  ' }).expect(201);

    const res = await agent.get('/user');
    expect(res.body.data).toEqual({ name: 'daniel' });
  });

  it.each([
    ['Zoë 李', 'Latin with a diaeresis and a Han character'],
    ['Дмитрий', 'Cyrillic'],
    ['محمد', 'Arabic'],
    ['👩‍💻 dev', 'an emoji sequence'],
    ['a'.repeat(64), 'exactly 64 characters'],
    ['李'.repeat(64), '64 Han characters'],
  ])('when the name is %j (%s), then it is accepted and read back as sent', async (name) => {
    const agent = request.agent(makeApp().app);

    await agent.post('/login').query({ name }).expect(201);

    const res = await agent.get('/user').expect(200);
    expect(res.body).toEqual({ info: 'User profile info', data: { name } });
  });

  it.each([
    ['/login', 'missing', /required/],
    ['/login?name=', 'empty', /empty/],
    ['/login?name=%20%20%20', 'blank', /empty or blank/],
    ['/login?name=a&name=b', 'repeated', /once/],
    [`/login?name=${'a'.repeat(65)}`, 'longer than 64 characters', /at most 64/],
    [`/login?name=${encodeURIComponent('李'.repeat(65))}`, '65 Han characters', /at most 64/],
    ['/login?name=da%00niel', 'holding NUL', /control characters/],
    ['/login?name=daniel%0d%0aSet-Cookie:%20x=1', 'holding CR LF', /control characters/],
    ['/login?name=tab%09bed', 'holding a tab', /control characters/],
    ['/login?name=%7F', 'holding DEL', /control characters/],
    ['/login?name=%C2%85', 'holding a C1 control', /control characters/],
  ])('when the name in %s is %s, then 400 with the reason and no session', async (url, _what, reason) => {
    const { app, store } = makeApp();

    const res = await request(app).post(url);

    expect(res.status).toBe(400);
    expect(res.headers['content-type']).toMatch(/^application\/json/);
    expect(res.body.error).toMatch(reason);
    expect(Object.keys(res.body)).toEqual(['error']);
    shouldNotSetCookie(res);
    expect(storedCount(store)).toBe(0);
  });

  it('when the name is sent as an object (name[x]=1), then 400 and nothing breaks', async () => {
    const res = await request(makeApp().app).post('/login?name[x]=1');

    expect(res.status).toBe(400);
    expect(res.body.error).toMatch(/"name"/);
  });

  it('when the name holds malformed percent-encoding, then the broken bytes read as U+FFFD, never a crash', async () => {
    const agent = request.agent(makeApp().app);

    await agent.post('/login?name=ab%E0%A4').expect(201);

    expect((await agent.get('/user')).body.data).toEqual({ name: 'ab\uFFFD' });
  });

  it('when a logged-in user logs in again, then the new name replaces the old in a new session', async () => {
    const agent = request.agent(makeApp().app);
    const first = await agent.post('/login?name=alice').expect(201);

    const second = await agent.post('/login?name=bob').expect(201);

    expect(sessionId(shouldSetCookie(second))).not.toBe(sessionId(shouldSetCookie(first)));
    expect((await agent.get('/user')).body.data).toEqual({ name: 'bob' });
  });
});

describe('GET /user', () => {
  it('when the session holds a user, then 200 with the profile', async () => {
    const agent = request.agent(makeApp().app);
    await agent.post('/login?name=daniel').expect(201);

    const res = await agent.get('/user');

    expect(res.status).toBe(200);
    expect(res.body).toEqual({ info: 'User profile info', data: { name: 'daniel' } });
  });

  it('when there is no cookie, then 200 with no data and no cookie set', async () => {
    const res = await request(makeApp().app).get('/user');

    expect(res.status).toBe(200);
    expect(res.body).toEqual({ info: 'No data present in session' });
    shouldNotSetCookie(res);
  });

  it.each([
    ['garbage', 'sid=garbage'],
    ['an unsigned ID', 'sid=abc123'],
    ['a forged signature', 'sid=s%3Aabc123.invalidsignature'],
    ['an empty value', 'sid='],
    ['a huge value', `sid=${'x'.repeat(4000)}`],
    ['broken percent-encoding', 'sid=%E0%A4%A'],
    ['the cookie twice', 'sid=a; sid=b'],
  ])('when the cookie is %s, then 200 anonymous and no cookie set', async (_what, cookie) => {
    const res = await request(makeApp().app).get('/user').set('Cookie', cookie);

    expect(res.status).toBe(200);
    expect(res.body).toEqual({ info: 'No data present in session' });
    shouldNotSetCookie(res);
  });

  it('when the cookie is a real session ID signed with another secret, then it is anonymous', async () => {
    const other = makeApp({ SESSION_SECRET: 'another-secret-another-secret-another' });
    const login = await request(other.app).post('/login?name=mallory').expect(201);
    const { app, store } = makeApp();
    // the same session exists in this app's store too, so only the signature can turn it away
    const id = sessionId(shouldSetCookie(login));
    other.store.get(id, (_err, sess) => store.set(id, sess!));

    const res = await request(app).get('/user').set('Cookie', `sid=${shouldSetCookie(login).value}`);

    expect(res.body).toEqual({ info: 'No data present in session' });
  });

  it('when two clients log in, then each keeps its own user', async () => {
    const { app } = makeApp();
    const alice = request.agent(app);
    const bob = request.agent(app);

    await alice.post('/login?name=alice').expect(201);
    await bob.post('/login?name=bob').expect(201);

    expect((await alice.get('/user')).body.data).toEqual({ name: 'alice' });
    expect((await bob.get('/user')).body.data).toEqual({ name: 'bob' });
  });

  it('when many clients log in at once, then none sees another one\'s user (no shared user object)', async () => {
    const { app } = makeApp();
    const names = Array.from({ length: 20 }, (_, i) => `user-${i}`);
    const agents = names.map(() => request.agent(app));

    await Promise.all(agents.map((agent, i) => agent.post('/login').query({ name: names[i] }).expect(201)));
    const profiles = await Promise.all(agents.map((agent) => agent.get('/user')));

    expect(profiles.map((res) => res.body.data.name)).toEqual(names);
  });

  it('when HEAD is used, then it answers like GET without a body', async () => {
    const res = await request(makeApp().app).head('/user');

    expect(res.status).toBe(200);
    expect(res.text).toBeUndefined();
  });
});

describe('POST /logout', () => {
  it('when logged in, then 204 with no body, the cookie cleared and the session gone from the store', async () => {
    const { app, store } = makeApp();
    const agent = request.agent(app);
    const login = await agent.post('/login?name=daniel').expect(201);
    const id = sessionId(shouldSetCookie(login));

    const res = await agent.post('/logout');

    expect(res.status).toBe(204);
    expect(res.text).toBe('');
    expect(res.headers['content-type']).toBeUndefined();
    const cleared = shouldSetCookie(res, 'sid');
    expect(cleared.value).toBe('');
    expect(new Date(cleared.attributes.expires as string).getTime()).toBeLessThan(Date.now());
    expect(cleared.attributes.path).toBe('/');
    expect(storedSession(store, id)).toBeNull();
    expect((await agent.get('/user')).body).toEqual({ info: 'No data present in session' });
  });

  it('when the old cookie is replayed after logout, then it reads as no session', async () => {
    const { app } = makeApp();
    const login = await request(app).post('/login?name=daniel').expect(201);
    const cookie = `sid=${shouldSetCookie(login).value}`;

    await request(app).post('/logout').set('Cookie', cookie).expect(204);

    const res = await request(app).get('/user').set('Cookie', cookie);
    expect(res.body).toEqual({ info: 'No data present in session' });
  });

  it('when there is no cookie, then 204 and no Set-Cookie', async () => {
    const res = await request(makeApp().app).post('/logout');

    expect(res.status).toBe(204);
    expect(res.text).toBe('');
    shouldNotSetCookie(res);
  });

  it('when the cookie is garbage, then 204 and the cookie is cleared anyway', async () => {
    const res = await request(makeApp().app).post('/logout').set('Cookie', 'sid=garbage');

    expect(res.status).toBe(204);
    expect(shouldSetCookie(res, 'sid').value).toBe('');
  });

  it('when a custom cookie name is configured, then that cookie is the one cleared', async () => {
    const agent = request.agent(makeApp({ SESSION_COOKIE_NAME: 'app_session' }).app);
    await agent.post('/login?name=daniel').expect(201);

    const res = await agent.post('/logout').expect(204);

    expect(shouldSetCookie(res, 'app_session').value).toBe('');
  });
});

describe('other paths and methods', () => {
  it.each([
    ['post', '/'],
    ['get', '/nope'],
    ['post', '/users'],
    ['get', '/login/extra'],
    ['delete', '/anything'],
    ['get', '/%E0%A4%A'],
  ] as const)('when %s %s, then 404 JSON', async (method, path) => {
    const res = await request(makeApp().app)[method](path);

    expect(res.status).toBe(404);
    expect(res.headers['content-type']).toMatch(/^application\/json/);
    expect(res.body).toEqual({ error: 'Not found' });
  });

  it.each([
    ['get', '/login', 'POST'],
    ['put', '/login', 'POST'],
    ['post', '/user', 'GET, HEAD'],
    ['delete', '/user', 'GET, HEAD'],
    ['get', '/logout', 'POST'],
    ['post', '/healthz', 'GET, HEAD'],
  ] as const)('when %s %s, then 405 JSON with Allow: %s', async (method, path, allow) => {
    const res = await request(makeApp().app)[method](path);

    expect(res.status).toBe(405);
    expect(res.headers.allow).toBe(allow);
    expect(res.body).toEqual({ error: 'Method not allowed' });
  });
});

describe('GET /', () => {
  it('when the page is asked for, then HTML that loads its script and style as files (no inline script)', async () => {
    const { app } = makeApp();

    const res = await request(app).get('/');

    expect(res.status).toBe(200);
    expect(res.headers['content-type']).toMatch(/^text\/html/);
    expect(res.text).toContain('<script src="/app.js" defer></script>');
    expect(res.text).not.toMatch(/<script>|\son[a-z]+=/);
    expect((await request(app).get('/app.js')).headers['content-type']).toMatch(/javascript/);
    expect((await request(app).get('/style.css')).headers['content-type']).toMatch(/^text\/css/);
  });
});

describe('GET /healthz', () => {
  it('when the store answers, then 200 ok', async () => {
    const res = await request(makeApp().app).get('/healthz');

    expect(res.status).toBe(200);
    expect(res.body).toEqual({ status: 'ok' });
  });
});
