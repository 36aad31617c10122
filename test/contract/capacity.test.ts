import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseDatabaseUrl } from '../../src/config/index.js';
import { Worker } from '../../src/db/entities/worker.js';
import { migrate, type Orm, openOrm } from '../../src/db/orm.js';
import { releaseCapacity, reserveCapacity } from '../../src/domain/lifecycle.js';
import { DRIVERS, freshDatabaseUrl } from '../helpers/databases.js';

/** The reservation primitive behind placement: a conditional UPDATE that cannot over-commit. */
describe.each(DRIVERS)('capacity reservation on %s', (kind) => {
  let orm: Orm;

  beforeAll(async () => {
    orm = await openOrm(parseDatabaseUrl(await freshDatabaseUrl(kind)));
    await migrate(orm);
  });
  afterAll(async () => {
    await orm?.close(true);
  });

  it('admits only what fits when 20 transactions reserve at once and hold their locks', async () => {
    const em = orm.em.fork();
    const worker = em.create(Worker, {
      name: `cap-${kind}`,
      capacityCpuMillis: 3000,
      capacityMemoryMb: 3000,
      labels: {},
    });
    await em.flush();
    // Every transaction decided from the same stale read ("3000 free"); only the UPDATE's condition protects the worker.
    const outcomes = await Promise.all(
      Array.from({ length: 20 }, () =>
        orm.em.fork().transactional(async (tx) => {
          const ok = await reserveCapacity(tx, worker.id, { cpuMillis: 500, memoryMb: 500, ports: 0 });
          await new Promise((r) => setTimeout(r, 20));
          return ok;
        }),
      ),
    );
    expect(outcomes.filter(Boolean)).toHaveLength(6);
    const after = await orm.em.fork().findOneOrFail(Worker, worker.id);
    expect(after.allocatedCpuMillis).toBe(3000);

    await orm.em
      .fork()
      .transactional((tx) => releaseCapacity(tx, worker.id, { cpuMillis: 500, memoryMb: 500, ports: 0 }));
    expect((await orm.em.fork().findOneOrFail(Worker, worker.id)).allocatedCpuMillis).toBe(2500);
  });

  it('refuses reservations on a draining worker', async () => {
    const em = orm.em.fork();
    const worker = em.create(Worker, {
      name: `drain-${kind}`,
      capacityCpuMillis: 3000,
      capacityMemoryMb: 3000,
      labels: {},
      status: 'DRAINING',
    });
    await em.flush();
    expect(
      await orm.em
        .fork()
        .transactional((tx) => reserveCapacity(tx, worker.id, { cpuMillis: 500, memoryMb: 500, ports: 0 })),
    ).toBe(false);
  });
});
