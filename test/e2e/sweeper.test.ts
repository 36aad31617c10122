import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DOMAIN_SWEEPER_LOCK } from '../../src/domain/sweeper.js';
import {
  createSandbox,
  createTenant,
  dataOf,
  getSandbox,
  registerWorker,
  TestClock,
  uniqueName,
} from '../helpers/fleet.js';
import { startTestServer, type TestServer } from '../helpers/server.js';

describe('domain sweeper on postgres', () => {
  let server: TestServer;
  const clock = new TestClock();

  beforeAll(async () => {
    server = await startTestServer('postgres', { clock });
  });
  afterAll(async () => {
    await server?.close();
  });

  it('runs on one replica only: while another holds the advisory lock it does nothing', async () => {
    await createTenant(server, uniqueName('sw'));
    const worker = await registerWorker(server, uniqueName('sww'));
    clock.advance(31);
    const other = new pg.Client({ connectionString: server.databaseUrl });
    await other.connect();
    try {
      await other.query('select pg_advisory_lock($1)', [DOMAIN_SWEEPER_LOCK]);
      expect(await server.app.sweeper.runOnce()).toBeNull();
      const status = async () =>
        dataOf(
          await server.gql<{ worker: { status: string } }>('query($id: ID!) { worker(id: $id) { status } }', {
            id: worker.id,
          }),
        );
      expect((await status()).worker.status).toBe('OFFLINE'); // reads as OFFLINE before any sweep
      await other.query('select pg_advisory_unlock($1)', [DOMAIN_SWEEPER_LOCK]);
      expect(await server.app.sweeper.runOnce()).toMatchObject({ workersOffline: 1 });
      expect(await server.app.sweeper.runOnce()).toMatchObject({ workersOffline: 0 });
    } finally {
      await other.end();
    }
  });

  it('places on the replica that saw the trigger even while another replica holds the sweeper lock', async () => {
    const tenantId = await createTenant(server, uniqueName('swp'));
    const pool = uniqueName('pool');
    const placement = { workerLabels: { pool } };
    const first = await registerWorker(server, uniqueName('swf'), { tenantId, labels: { pool }, cpuMillis: 500 });
    clock.advance(31);
    await server.app.sweeper.runOnce(); // the only worker of the pool is OFFLINE
    const waiting = await createSandbox(server, tenantId, { placement });
    expect(waiting.sandbox.status).toBe('PENDING');
    const other = new pg.Client({ connectionString: server.databaseUrl });
    await other.connect();
    try {
      await other.query('select pg_advisory_lock($1)', [DOMAIN_SWEEPER_LOCK]);
      const worker = await registerWorker(server, uniqueName('sws'), { tenantId, labels: { pool } });
      expect(await server.app.sweeper.runIfDue()).toMatchObject({ sandboxesPlaced: 1 });
      expect(await getSandbox(server, waiting.sandbox.id)).toMatchObject({
        status: 'SCHEDULED',
        worker: { id: worker.id },
      });
      expect(first.id).not.toBe(worker.id);
    } finally {
      await other.end();
    }
  });
});
