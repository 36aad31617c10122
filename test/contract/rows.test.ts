import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseDatabaseUrl } from '../../src/config/index.js';
import { WITH_DELETED } from '../../src/db/entities/base.js';
import { Member } from '../../src/db/entities/member.js';
import { Message } from '../../src/db/entities/message.js';
import { Sandbox } from '../../src/db/entities/sandbox.js';
import { Tenant } from '../../src/db/entities/tenant.js';
import { Worker } from '../../src/db/entities/worker.js';
import { migrate, type Orm, openOrm } from '../../src/db/orm.js';
import { findRows } from '../../src/db/rows.js';
import { DRIVERS, freshDatabaseUrl } from '../helpers/databases.js';

/**
 * Read-only rows (list pages) must read exactly what the ORM reads: every property converted
 * the same way (dates, JSON, booleans, nulls), relations as their ids, soft-deleted rows hidden.
 */
describe.each(DRIVERS)('read-only rows on %s', (kind) => {
  let orm: Orm;
  let tenant: Tenant;

  beforeAll(async () => {
    orm = await openOrm(parseDatabaseUrl(await freshDatabaseUrl(kind)));
    await migrate(orm);
    const em = orm.em.fork();
    tenant = em.create(Tenant, {
      slug: 'rows',
      name: 'Rows',
      quota: { maxSandboxes: 5, maxCpuMillis: 4000, maxMemoryMb: 8192 },
      policy: { allowedImages: ['ghcr.io/acme/*'], maxSandboxTtlSeconds: 3600 },
    });
    const worker = em.create(Worker, {
      name: 'rows-w',
      capacityCpuMillis: 4000,
      capacityMemoryMb: 8192,
      labels: { gpu: 'none', 'zone.k8s.io': 'a' },
    });
    em.create(Member, { tenant, subject: 'someone', role: 'VIEWER' });
    const placed = em.create(Sandbox, {
      tenant,
      worker,
      name: 'placed',
      image: 'ghcr.io/acme/agent:1',
      command: ['run', '--flag', 'ü'],
      cpuMillis: 250,
      memoryMb: 256,
      labels: { team: 'x' },
      placement: { region: 'eu', labels: { gpu: 'none' } },
      status: 'RUNNING',
      agentPhase: 'THINKING',
      agentActivity: 'reading',
      agentUpdatedAt: new Date('2026-01-02T03:04:05.678Z'),
      startedAt: new Date('2026-01-02T03:00:00.001Z'),
      exitCode: null,
      ttlSeconds: 600,
    });
    em.create(Sandbox, { tenant, name: 'pending', image: 'ghcr.io/acme/agent:1', cpuMillis: 1, memoryMb: 1 });
    em.create(Sandbox, {
      tenant,
      name: 'gone',
      image: 'ghcr.io/acme/agent:1',
      cpuMillis: 1,
      memoryMb: 1,
      status: 'DELETED',
      deletedAt: new Date(),
    });
    em.create(Message, {
      tenant,
      sandbox: placed,
      threadId: 'main',
      channel: 'dashboard',
      senderKind: 'USER',
      senderId: 'someone',
      body: 'hello',
    });
    await em.flush();
  });
  afterAll(async () => {
    await orm?.close(true);
  });

  /** What a resolver can see of an entity: its own properties, relations by id. */
  function visible(entity: object): Record<string, unknown> {
    const out: Record<string, unknown> = {};
    for (const [key, value] of Object.entries(entity)) {
      if (key.startsWith('__')) continue;
      out[key] =
        value !== null && typeof value === 'object' && 'id' in value && !(value instanceof Date)
          ? { id: (value as { id: string }).id }
          : value;
    }
    return out;
  }

  for (const [name, entity] of [
    ['Sandbox', Sandbox],
    ['Worker', Worker],
    ['Tenant', Tenant],
    ['Member', Member],
    ['Message', Message],
  ] as const) {
    it(`reads ${name} rows as the ORM does`, async () => {
      const where = name === 'Worker' || name === 'Tenant' ? {} : { tenant: tenant.id };
      const loaded = await orm.em.fork().find(entity as never, where, { orderBy: { id: 'asc' } } as never);
      const rows = await findRows(orm.em.fork(), entity as never, where, { orderBy: { id: 'asc' } });
      expect(rows.length).toBeGreaterThan(0);
      expect(rows.map((r) => visible(r as object))).toEqual(loaded.map((e) => visible(e as object)));
      for (const row of rows) expect(row).toBeInstanceOf(entity);
    });
  }

  it('hides soft-deleted rows unless asked, as find does', async () => {
    const names = async (filters: boolean) =>
      (await findRows(orm.em.fork(), Sandbox, { tenant: tenant.id }, { filters })).map((s) => s.name).sort();
    expect(await names(true)).toEqual(['pending', 'placed']);
    expect(await names(false)).toEqual(['gone', 'pending', 'placed']);
    const all = await orm.em.fork().find(Sandbox, { tenant: tenant.id }, WITH_DELETED);
    expect(all).toHaveLength(3);
  });
});
