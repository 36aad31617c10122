import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseDatabaseUrl } from '../../src/config/index.js';
import { Tenant } from '../../src/db/entities/tenant.js';
import { migrate, type Orm, openOrm } from '../../src/db/orm.js';
import { DRIVERS, freshDatabaseUrl } from '../helpers/databases.js';

/** `updatedAt` is the ORM's job: equal to `createdAt` on insert, the injected clock's now on update. */
describe.each(DRIVERS)('timestamps on %s', (kind) => {
  let orm: Orm;
  const now = new Date('2030-01-02T03:04:05.006Z');

  beforeAll(async () => {
    orm = await openOrm(parseDatabaseUrl(await freshDatabaseUrl(kind)), { now: () => now });
    await migrate(orm);
  });
  afterAll(async () => {
    await orm?.close(true);
  });

  it('stamps updatedAt from the clock the ORM was given', async () => {
    const createdAt = new Date('2030-01-01T00:00:00.000Z');
    const em = orm.em.fork();
    const tenant = em.create(Tenant, {
      slug: 'stamped',
      name: 'Stamped',
      quota: { maxSandboxes: 1, maxCpuMillis: 1000, maxMemoryMb: 1024 },
      policy: { allowedImages: [], maxSandboxTtlSeconds: null },
      createdAt,
    });
    await em.flush();
    const inserted = await orm.em.fork().findOneOrFail(Tenant, tenant.id);
    expect(inserted.updatedAt.toISOString()).toBe(createdAt.toISOString());

    const e = orm.em.fork();
    const toUpdate = await e.findOneOrFail(Tenant, tenant.id);
    toUpdate.name = 'Renamed';
    await e.flush();
    expect((await orm.em.fork().findOneOrFail(Tenant, tenant.id)).updatedAt.toISOString()).toBe(now.toISOString());
  });
});
