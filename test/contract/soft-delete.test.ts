import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseDatabaseUrl } from '../../src/config/index.js';
import { WITH_DELETED } from '../../src/db/entities/base.js';
import { Lease } from '../../src/db/entities/lease.js';
import { Sandbox } from '../../src/db/entities/sandbox.js';
import { Tenant } from '../../src/db/entities/tenant.js';
import { Worker } from '../../src/db/entities/worker.js';
import { migrate, type Orm, openOrm } from '../../src/db/orm.js';
import { DRIVERS, freshDatabaseUrl } from '../helpers/databases.js';

/** The soft-delete filter: on by default for sandboxes and workers, off only where a read asks. */
describe.each(DRIVERS)('soft-delete filter on %s', (kind) => {
  let orm: Orm;
  let tenant: Tenant;
  let live: Sandbox;
  let gone: Sandbox;
  let goneWorker: Worker;

  beforeAll(async () => {
    orm = await openOrm(parseDatabaseUrl(await freshDatabaseUrl(kind)));
    await migrate(orm);
    const em = orm.em.fork();
    tenant = em.create(Tenant, {
      slug: 'soft',
      name: 'Soft',
      quota: { maxSandboxes: 5, maxCpuMillis: 4000, maxMemoryMb: 8192 },
      policy: { allowedImages: [], maxSandboxTtlSeconds: null },
    });
    goneWorker = em.create(Worker, {
      name: 'gone-worker',
      capacityCpuMillis: 1000,
      capacityMemoryMb: 1024,
      deletedAt: new Date(),
    });
    const sandbox = (name: string, deletedAt: Date | null) =>
      em.create(Sandbox, { tenant, name, image: 'img', cpuMillis: 100, memoryMb: 128, deletedAt });
    live = sandbox('live', null);
    gone = sandbox('gone', new Date());
    const now = new Date();
    em.create(Lease, {
      sandbox: gone,
      holder: goneWorker,
      fencingToken: '1',
      acquiredAt: now,
      renewedAt: now,
      expiresAt: now,
    });
    await em.flush();
  });
  afterAll(async () => {
    await orm?.close(true);
  });

  it('hides deleted rows from find, findOne and count', async () => {
    const em = orm.em.fork();
    expect((await em.find(Sandbox, { tenant: tenant.id })).map((s) => s.id)).toEqual([live.id]);
    expect(await em.findOne(Sandbox, gone.id)).toBeNull();
    expect(await em.count(Sandbox, { tenant: tenant.id })).toBe(1);
    expect(await em.findOne(Worker, goneWorker.id)).toBeNull();
  });

  it('hides them behind a relation condition that joins the table', async () => {
    const em = orm.em.fork();
    expect(await em.count(Lease, { sandbox: { tenant: tenant.id } })).toBe(0);
    expect(await em.count(Lease, { holder: { name: 'gone-worker' } })).toBe(0);
  });

  it('shows them to a read that turns the filter off', async () => {
    const em = orm.em.fork();
    expect((await em.findOneOrFail(Sandbox, gone.id, WITH_DELETED)).name).toBe('gone');
    expect(await em.count(Sandbox, { tenant: tenant.id }, WITH_DELETED)).toBe(2);
    expect(await em.count(Worker, { name: 'gone-worker' }, WITH_DELETED)).toBe(1);
    expect(await em.count(Lease, { holder: { name: 'gone-worker' } }, WITH_DELETED)).toBe(1);
  });
});
