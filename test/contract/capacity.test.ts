import { UniqueConstraintViolationException } from '@mikro-orm/core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseDatabaseUrl } from '../../src/config/index.js';
import { PortAllocation } from '../../src/db/entities/port-allocation.js';
import { Sandbox } from '../../src/db/entities/sandbox.js';
import { Tenant } from '../../src/db/entities/tenant.js';
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

  it('admits only as many port reservations as the range holds when 20 transactions reserve at once', async () => {
    const em = orm.em.fork();
    const worker = em.create(Worker, {
      name: `ports-${kind}`,
      capacityCpuMillis: 3000,
      capacityMemoryMb: 3000,
      labels: {},
      portsFrom: 9000,
      portsTo: 9004,
    });
    const portless = em.create(Worker, {
      name: `portless-${kind}`,
      capacityCpuMillis: 3000,
      capacityMemoryMb: 3000,
      labels: {},
    });
    await em.flush();
    const outcomes = await Promise.all(
      Array.from({ length: 20 }, () =>
        orm.em.fork().transactional(async (tx) => {
          const ok = await reserveCapacity(tx, worker.id, { cpuMillis: 1, memoryMb: 1, ports: 2 });
          await new Promise((r) => setTimeout(r, 20));
          return ok;
        }),
      ),
    );
    // Five ports: two sandboxes of two fit, the third would need a sixth.
    expect(outcomes.filter(Boolean)).toHaveLength(2);
    expect((await orm.em.fork().findOneOrFail(Worker, worker.id)).allocatedPorts).toBe(4);
    const reserve = (id: string, ports: number) =>
      orm.em.fork().transactional((tx) => reserveCapacity(tx, id, { cpuMillis: 1, memoryMb: 1, ports }));
    expect(await reserve(portless.id, 1)).toBe(false);
    expect(await reserve(portless.id, 0)).toBe(true);
  });

  it('refuses a second allocation of one port of a worker (the unique index)', async () => {
    const em = orm.em.fork();
    const tenant = em.create(Tenant, {
      slug: `ports-${kind}`,
      name: 'Ports',
      quota: { maxSandboxes: 5, maxCpuMillis: 4000, maxMemoryMb: 8192 },
      policy: { allowedImages: [], maxSandboxTtlSeconds: null },
    });
    const worker = em.create(Worker, {
      name: `unique-${kind}`,
      capacityCpuMillis: 3000,
      capacityMemoryMb: 3000,
      labels: {},
      portsFrom: 9000,
      portsTo: 9001,
    });
    const [a, b] = ['a', 'b'].map((name) =>
      em.create(Sandbox, {
        tenant,
        worker,
        name,
        image: 'x',
        cpuMillis: 1,
        memoryMb: 1,
        status: 'SCHEDULED',
        ports: 1,
      }),
    );
    em.create(PortAllocation, { sandbox: a, worker, name: 'A', port: 9000 });
    await em.flush();
    const twice = orm.em.fork();
    twice.create(PortAllocation, { sandbox: b.id, worker: worker.id, name: 'A', port: 9000 });
    await expect(twice.flush()).rejects.toBeInstanceOf(UniqueConstraintViolationException);
    // Another port of the same worker, or the same port of another worker, is fine.
    const other = orm.em.fork();
    other.create(PortAllocation, { sandbox: b.id, worker: worker.id, name: 'A', port: 9001 });
    await other.flush();
    expect(await orm.em.fork().count(PortAllocation, { worker: worker.id })).toBe(2);
  });
});
