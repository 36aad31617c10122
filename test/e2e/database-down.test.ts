import { describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config/index.js';
import { startFlotilla } from '../../src/server/app.js';
import { tempDir } from '../helpers/databases.js';
import { randomPort, startTestPostgres } from '../helpers/postgres.js';

async function waitFor<T>(probe: () => Promise<T | null>, timeoutMs: number): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value !== null) return value;
    if (Date.now() > deadline) throw new Error('timed out waiting');
    await new Promise((r) => setTimeout(r, 200));
  }
}

describe('a database that is down at start', () => {
  it('is reported clearly, keeps readiness false, and is used once it comes back', async () => {
    const port = randomPort();
    const config = loadConfig({
      FLOTILLA_DATABASE_URL: `postgres://postgres:postgres@127.0.0.1:${port}/postgres`,
      FLOTILLA_PORT: '0',
      FLOTILLA_DATA_DIR: tempDir(),
      FLOTILLA_LOG_LEVEL: 'silent',
    });
    const app = await startFlotilla(config);
    let pg: Awaited<ReturnType<typeof startTestPostgres>> | null = null;
    try {
      const ready = await fetch(`${app.url}/readyz`);
      expect(ready.status).toBe(503);
      expect(((await ready.json()) as { reason: string }).reason).toMatch(/ECONNREFUSED|connect/i);
      expect((await fetch(`${app.url}/healthz`)).status).toBe(200);

      const refused = await fetch(app.graphqlUrl, {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: 'Bearer anything' },
        body: JSON.stringify({ query: '{ viewer { subject } }' }),
      });
      expect(refused.status).toBe(503);
      const body = (await refused.json()) as { errors: { extensions: { code: string } }[] };
      expect(body.errors[0].extensions.code).toBe('UNAVAILABLE');

      pg = await startTestPostgres({ port, ignoreDatabaseUrl: true });
      await waitFor(async () => ((await fetch(`${app.url}/readyz`)).status === 200 ? true : null), 30_000);
      await app.ready;
      const token = app.adminToken?.token as string;
      const answer = await fetch(app.graphqlUrl, {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: `Bearer ${token}` },
        body: JSON.stringify({ query: '{ viewer { platformAdmin } }' }),
      });
      expect(await answer.json()).toEqual({ data: { viewer: { platformAdmin: true } } });
    } finally {
      await app.close();
      await pg?.stop();
    }
  });
});
