import { listen, makeApp, runCollection } from './helpers';

describe('the Postman collection', () => {
  it('when newman runs it against the app on a real socket, then every request and test passes', async () => {
    const server = await listen(makeApp().app);
    try {
      const summary = await runCollection(server.url);

      expect(summary.run.failures.map((f) => `${f.source?.name}: ${f.error.message}`)).toEqual([]);
      expect(summary.run.executions.map((e) => e.item.name)).toEqual([
        'Login',
        'User',
        'Sessions',
        'End other sessions',
        'End an unknown session',
        'Logout',
        'User again',
        'Sessions after logout',
      ]);
      expect(summary.run.stats.assertions.total).toBeGreaterThanOrEqual(19);
      expect(summary.run.stats.assertions.failed).toBe(0);
    } finally {
      await server.close();
    }
  });
});
