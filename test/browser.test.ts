import { mkdirSync } from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { chromium, type Browser, type BrowserContext, type Page } from 'playwright-core';
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

  beforeAll(async () => {
    browser = await chromium.launch({
      executablePath: CHROMIUM,
      args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--no-first-run'],
    });
    app = await listen(makeApp().app);
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

  it('when a page on another site auto-submits a form POST to /logout, then the session stays alive (SameSite=Lax)', async () => {
    await logIn('daniel');
    const attacker = await attackerSite(`${appUrl}/logout`);
    try {
      const posted = page.waitForResponse((res) => res.url() === `${appUrl}/logout` && res.request().method() === 'POST');
      // the attacker's page navigates away at once: wait for its forged POST, not for its load
      await page.goto(attacker.url, { waitUntil: 'commit' });
      const forged = await posted;

      await page.goto(appUrl);
      const profile = await press('Show profile');

      expect(forged.status()).toBe(204);
      expect((await forged.request().allHeaders()).cookie ?? '').not.toContain('sid=');
      expect(JSON.parse(profile.body)).toEqual({ info: 'User profile info', data: { name: 'daniel' } });
    } finally {
      await attacker.close();
    }
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

/** a page on 127.0.0.1 (another site than localhost) whose form posts itself to `target` on load */
async function attackerSite(target: string): Promise<{ url: string; close(): Promise<void> }> {
  const html = `<!doctype html><html><body>
<form id="f" method="POST" action="${target}"></form>
<script>document.getElementById('f').submit()</script>
</body></html>`;
  const server = http.createServer((_req, res) => {
    res.writeHead(200, { 'Content-Type': 'text/html' });
    res.end(html);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}/`,
    close: () => new Promise((resolve) => server.close(() => resolve())),
  };
}
