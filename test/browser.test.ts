import { mkdirSync } from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { chromium, type Browser, type BrowserContext, type Page, type Request as PlaywrightRequest } from 'playwright-core';
import { describeWith, listen, makeApp } from './helpers';

const CHROMIUM = '/usr/bin/chromium';
// the README's picture is refreshed with UPDATE_SCREENSHOT=1 npm test; other runs keep theirs out of the tree
const SCREENSHOT = process.env.UPDATE_SCREENSHOT === '1' ? path.join(__dirname, 'screenshots', 'page.png') : path.join(os.tmpdir(), 'session-page.png');

describeWith(CHROMIUM, 'the page in a real browser', () => {
  let browser: Browser;
  let app: Awaited<ReturnType<typeof listen>>;
  let appUrl: string;
  let context: BrowserContext;
  let page: Page;
  let consoleErrors: string[];
  const received: { method?: string; url?: string; cookie?: string }[] = [];

  beforeAll(async () => {
    browser = await chromium.launch({
      executablePath: CHROMIUM,
      args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--no-first-run'],
    });
    app = await listen(makeApp().app);
    // what reached the server, cookies included: a request the browser later blocks shows no headers to the test
    app.server.on('request', (req: http.IncomingMessage) => received.push({ method: req.method, url: req.url, cookie: req.headers.cookie }));
    // the app at localhost, so that 127.0.0.1 is another site
    appUrl = `http://localhost:${app.port}`;
  });

  afterAll(async () => {
    await browser?.close();
    await app?.close();
  });

  beforeEach(async () => {
    context = await browser.newContext();
    page = await context.newPage();
    consoleErrors = [];
    page.on('console', (message) => {
      if (message.type() === 'error') consoleErrors.push(message.text());
    });
    page.on('pageerror', (error) => consoleErrors.push(error.message));
    await page.goto(appUrl);
  });

  afterEach(async () => {
    await context.close();
  });

  async function logIn(name: string): Promise<void> {
    await page.getByLabel('Name').fill(name);
    await page.getByRole('button', { name: 'Log in' }).click();
    await page.locator('#responses li').first().getByText(/→ 201/).waitFor();
  }

  /** clicks, waits for the newest answer, returns its status line and body */
  async function press(button: string): Promise<{ status: string; body: string }> {
    const before = await page.locator('#responses li').count();
    await page.getByRole('button', { name: button }).click();
    await page.waitForFunction((n) => document.querySelectorAll('#responses li .status:not(:empty)').length > n, before);
    const newest = page.locator('#responses li').first();
    return { status: await newest.locator('.status').innerText(), body: await newest.locator('pre').innerText() };
  }

  it('when a person logs in, shows the profile and logs out from the page, then each answer appears, with no console errors', async () => {
    await logIn('Zoë 李');
    const profile = await press('Show profile');
    const logout = await press('Log out');
    const after = await press('Show profile');

    expect(profile.status).toContain('GET /user → 200');
    expect(JSON.parse(profile.body)).toEqual({ info: 'User profile info', data: { name: 'Zoë 李' } });
    expect(logout.status).toContain('POST /logout → 204');
    expect(logout.body).toBe('(no body)');
    expect(JSON.parse(after.body)).toEqual({ info: 'No data present in session' });
    expect(consoleErrors).toEqual([]);
  });

  it('when the browser holds the session cookie, then document.cookie does not show it (HttpOnly)', async () => {
    await logIn('daniel');

    const held = await context.cookies(appUrl);
    const visible = await page.evaluate(() => document.cookie);

    expect(held.map((cookie) => cookie.name)).toContain('sid');
    expect(visible).not.toContain('sid');
  });

  /** the session the page's own "Show profile" reports: a name, or undefined for none */
  async function profileName(): Promise<string | undefined> {
    await page.goto(appUrl);
    const profile = await press('Show profile');
    return (JSON.parse(profile.body) as { data?: { name: string } }).data?.name;
  }

  /**
   * Opens `forger` in the visitor's tab and waits until the POST it makes to `target` is over: its status (none
   * for a no-cors fetch, whose answer helmet's Cross-Origin-Resource-Policy keeps from the page) and whether the
   * server received the session cookie with it (SameSite decides that, not the app).
   */
  async function visit(forger: ForgingSite, target: string): Promise<{ status: number | undefined; cookieSent: boolean }> {
    const over = new Promise<PlaywrightRequest>((resolve) => {
      const done = (req: PlaywrightRequest) => {
        if (req.url() === target && req.method() === 'POST') resolve(req);
      };
      page.on('requestfinished', done);
      page.on('requestfailed', done);
    });
    // a form navigates away at once: wait for its POST, not for the forging page's load
    await page.goto(forger.url, { waitUntil: 'commit' });
    const forged = await over;
    const status = (await forged.response())?.status();
    // a form's answer is the tab's new page, unless it is a 204 (which leaves the tab where it was)
    if (forger.navigates && status !== 204) await page.waitForURL(target);
    const { pathname, search } = new URL(target);
    const arrived = received.filter((req) => req.method === 'POST' && req.url === pathname + search).at(-1);
    if (!arrived) throw new Error(`the forged POST to ${target} never reached the server`);
    return { status, cookieSent: (arrived.cookie ?? '').includes('sid=') };
  }

  describe('pages of other origins cannot change the session (login CSRF, forged logout)', () => {
    const forgers: ForgingSite[] = [];
    afterAll(async () => Promise.all(forgers.map((forger) => forger.close())));

    async function forger(host: '127.0.0.1' | 'localhost', kind: 'form' | 'fetch', target: string): Promise<ForgingSite> {
      const site = await forgingSite(host, kind, target);
      forgers.push(site);
      return site;
    }

    it('when a visitor with no session opens another site that posts a login form, then the visitor stays anonymous', async () => {
      const target = `${appUrl}/login?name=attacker`;
      const site = await forger('127.0.0.1', 'form', target);

      const forged = await visit(site, target);

      expect(forged.status).toBe(403);
      expect(await context.cookies(appUrl)).toEqual([]);
      expect(await profileName()).toBeUndefined();
    });

    it('when a logged-in visitor opens another site that posts a login form, then the visitor is still themselves', async () => {
      await logIn('daniel');
      const target = `${appUrl}/login?name=attacker`;
      const site = await forger('127.0.0.1', 'form', target);

      const forged = await visit(site, target);

      expect(forged.status).toBe(403);
      expect(await profileName()).toBe('daniel');
    });

    it('when another site auto-submits a form POST to /logout, then the cookie is not even sent (SameSite=Lax) and the session stays', async () => {
      await logIn('daniel');
      const target = `${appUrl}/logout`;
      const site = await forger('127.0.0.1', 'form', target);

      const forged = await visit(site, target);

      expect(forged.cookieSent).toBe(false);
      expect(forged.status).toBe(403);
      expect(await profileName()).toBe('daniel');
    });

    it.each([
      ['/logout', 'form'],
      ['/login?name=attacker', 'form'],
      ['/logout', 'fetch'],
    ] as const)('when a same-site page on another port posts %s (%s), then the cookie goes with it and still nothing changes', async (path, kind) => {
      await logIn('daniel');
      const target = `${appUrl}${path}`;
      // localhost on another port: the same site, so SameSite=Lax lets the cookie through
      const site = await forger('localhost', kind, target);

      const forged = await visit(site, target);

      expect(forged.cookieSent).toBe(true);
      if (kind === 'form') expect(forged.status).toBe(403);
      expect(await profileName()).toBe('daniel');
    });
  });

  it('when the name is markup, then it is shown literally and runs nothing', async () => {
    const name = '<img src=x onerror="window.__pwned = true">';

    await logIn(name);
    const profile = await press('Show profile');

    expect(JSON.parse(profile.body).data.name).toBe(name);
    expect(await page.locator('#responses img').count()).toBe(0);
    expect(await page.evaluate(() => (window as unknown as { __pwned?: boolean }).__pwned)).toBeUndefined();
    expect(consoleErrors).toEqual([]);
  });

  describe('your sessions', () => {
    /** a second browser (its own cookies) logged in under `name` from the page */
    async function otherBrowser(name: string): Promise<{ context: BrowserContext; page: Page; name: () => Promise<string | undefined> }> {
      const other = await browser.newContext();
      const otherPage = await other.newPage();
      await otherPage.goto(appUrl);
      await otherPage.getByLabel('Name').fill(name);
      await otherPage.getByRole('button', { name: 'Log in' }).click();
      await otherPage.locator('#responses li').first().getByText(/→ 201/).waitFor();
      return {
        context: other,
        page: otherPage,
        // what the server says of that browser's session now, by a request of its own
        name: async () => ((await otherPage.evaluate(() => fetch('/user').then((res) => res.json()))) as { data?: { name: string } }).data?.name,
      };
    }

    const rows = () => page.locator('#sessions li');

    it('when A and B are logged in under one name, then A lists B and ends it, and B\'s next request is anonymous', async () => {
      await logIn('shared-a');
      const b = await otherBrowser('shared-a');
      try {
        await page.reload();
        await rows().nth(1).waitFor();

        const listed = await rows().allInnerTexts();
        expect(listed).toHaveLength(2);
        expect(listed.filter((row) => row.includes('this session'))).toHaveLength(1);
        expect(listed.every((row) => /Chrome \d+ on Linux/.test(row) && /127\.0\.0\.0|::/.test(row))).toBe(true);
        const other = rows().filter({ hasNot: page.getByText('this session') });
        await other.getByRole('button', { name: 'End' }).click();
        await page.locator('#responses li').first().getByText(/DELETE \/sessions\/\S+ → 204/).waitFor();
        await page.waitForFunction(() => document.querySelectorAll('#sessions li').length === 1);

        expect(await b.name()).toBeUndefined();
        expect(await profileName()).toBe('shared-a');
        expect(consoleErrors).toEqual([]);
      } finally {
        await b.context.close();
      }
    });

    it('when A presses "Log out other sessions", then only A is left', async () => {
      await logIn('shared-b');
      const b = await otherBrowser('shared-b');
      const c = await otherBrowser('shared-b');
      try {
        await page.reload();
        await rows().nth(2).waitFor();

        const answer = await press('Log out other sessions');

        expect(answer.status).toContain('DELETE /sessions → 200');
        expect(JSON.parse(answer.body)).toEqual({ ended: 2 });
        await page.waitForFunction(() => document.querySelectorAll('#sessions li').length === 1);
        expect(await rows().allInnerTexts()).toEqual([expect.stringContaining('this session')]);
        expect([await b.name(), await c.name()]).toEqual([undefined, undefined]);
        expect(await profileName()).toBe('shared-b');
      } finally {
        await Promise.all([b.context.close(), c.context.close()]);
      }
    });

    it('when a session\'s device text is markup, then it is shown as text', async () => {
      await logIn('markup');
      await page.route('**/sessions', (route) =>
        route.fulfill({
          contentType: 'application/json',
          body: JSON.stringify({
            sessions: [{ id: 'x', current: false, createdAt: new Date().toISOString(), lastSeenAt: new Date().toISOString(), expiresAt: new Date().toISOString(), browser: '<img src=x onerror="window.__pwned = true">', os: 'OS', ip: '<b>ip</b>' }],
          }),
        }),
      );
      await page.reload();
      await rows().first().waitFor();

      expect(await rows().first().innerText()).toContain('<img src=x');
      expect(await page.locator('#sessions img, #sessions b').count()).toBe(0);
      expect(await page.evaluate(() => (window as unknown as { __pwned?: boolean }).__pwned)).toBeUndefined();
    });
  });

  it('when the page has been used, then a screenshot of it can be taken (the picture in the README)', async () => {
    await page.setViewportSize({ width: 900, height: 640 });
    await logIn('daniel');
    await press('Show profile');

    mkdirSync(path.dirname(SCREENSHOT), { recursive: true });
    const png = await page.screenshot({ path: SCREENSHOT });

    // a PNG signature, and something drawn
    expect(png.subarray(0, 8)).toEqual(Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]));
    expect(png.length).toBeGreaterThan(5000);
  });
});

interface ForgingSite {
  url: string;
  /** a form submission takes the tab to the target; a fetch does not */
  navigates: boolean;
  close(): Promise<void>;
}

/**
 * An attacker's page that, on load, posts to `target`: with a form (a top-level navigation) or with a no-cors
 * fetch that includes credentials. Served from 127.0.0.1 (another site than the app's localhost) or from
 * localhost on its own port (the same site, another origin: what a sibling subdomain is in production).
 */
async function forgingSite(host: '127.0.0.1' | 'localhost', kind: 'form' | 'fetch', target: string): Promise<ForgingSite> {
  const action = JSON.stringify(target);
  const script =
    kind === 'form'
      ? `const form = document.createElement('form'); form.method = 'POST'; form.action = ${action};
document.body.append(form); form.submit();`
      : `fetch(${action}, { method: 'POST', mode: 'no-cors', credentials: 'include' });`;
  const html = `<!doctype html><html><body><script>${script}</script></body></html>`;
  const server = http.createServer((_req, res) => {
    res.writeHead(200, { 'Content-Type': 'text/html' });
    res.end(html);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://${host}:${port}/`,
    navigates: kind === 'form',
    close: () =>
      new Promise((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}
