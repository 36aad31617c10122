import { UniqueConstraintViolationException } from '@mikro-orm/core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseDatabaseUrl } from '../../src/config/index.js';
import { ApiToken } from '../../src/db/entities/api-token.js';
import { AuditEntry } from '../../src/db/entities/audit-entry.js';
import { WITH_DELETED } from '../../src/db/entities/base.js';
import { Event } from '../../src/db/entities/event.js';
import { Lease } from '../../src/db/entities/lease.js';
import { Member } from '../../src/db/entities/member.js';
import { Message } from '../../src/db/entities/message.js';
import { ACTIVE_SANDBOX, Sandbox } from '../../src/db/entities/sandbox.js';
import { SigningKey } from '../../src/db/entities/signing-key.js';
import { Tenant } from '../../src/db/entities/tenant.js';
import { Worker } from '../../src/db/entities/worker.js';
import { MIGRATIONS_TABLE, migrate, type Orm, openOrm, pendingMigrations } from '../../src/db/orm.js';
import { appendEvent } from '../../src/events/log.js';
import { DRIVERS, freshDatabaseUrl } from '../helpers/databases.js';
import { describeColumns } from '../helpers/schema-introspection.js';

/** The store contract: the same suite, unchanged, against each driver. */
describe.each(DRIVERS)('store contract on %s', (kind) => {
  let orm: Orm;

  beforeAll(async () => {
    orm = await openOrm(parseDatabaseUrl(await freshDatabaseUrl(kind)));
    await migrate(orm);
  });
  afterAll(async () => {
    await orm?.close(true);
  });

  const em = () => orm.em.fork();

  async function seedTenant(slug = `t-${Math.random().toString(36).slice(2, 10)}`): Promise<Tenant> {
    const e = em();
    const tenant = e.create(Tenant, {
      slug,
      name: `Tenant ${slug}`,
      quota: { maxSandboxes: 5, maxCpuMillis: 4000, maxMemoryMb: 8192 },
      policy: { allowedImages: ['ghcr.io/acme/*'], maxSandboxTtlSeconds: 3600 },
    });
    await e.flush();
    return tenant;
  }

  async function seedWorker(name = `w-${Math.random().toString(36).slice(2, 10)}`): Promise<Worker> {
    const e = em();
    const worker = e.create(Worker, { name, capacityCpuMillis: 4000, capacityMemoryMb: 8192, labels: { gpu: 'none' } });
    await e.flush();
    return worker;
  }

  async function seedSandbox(tenant: Tenant, worker: Worker | null = null, name = 'sb'): Promise<Sandbox> {
    const e = em();
    const sandbox = e.create(Sandbox, {
      tenant: tenant.id,
      worker: worker?.id ?? null,
      name,
      image: 'ghcr.io/acme/agent:1',
      command: ['python', '-m', 'agent'],
      cpuMillis: 500,
      memoryMb: 512,
      labels: { team: 'core' },
    });
    await e.flush();
    return sandbox;
  }

  it('round-trips a tenant: create, read, update, delete', async () => {
    const tenant = await seedTenant('round-trip');
    const read = await em().findOneOrFail(Tenant, { slug: 'round-trip' });
    expect(read.id).toBe(tenant.id);
    expect(read.quota).toEqual({ maxSandboxes: 5, maxCpuMillis: 4000, maxMemoryMb: 8192 });
    expect(read.policy).toEqual({ allowedImages: ['ghcr.io/acme/*'], maxSandboxTtlSeconds: 3600 });

    const e = em();
    const toUpdate = await e.findOneOrFail(Tenant, tenant.id);
    const before = toUpdate.updatedAt.getTime();
    await new Promise((r) => setTimeout(r, 5));
    toUpdate.name = 'Renamed';
    await e.flush();
    const updated = await em().findOneOrFail(Tenant, tenant.id);
    expect(updated.name).toBe('Renamed');
    expect(updated.updatedAt.getTime()).toBeGreaterThan(before);

    const d = em();
    d.remove(await d.findOneOrFail(Tenant, tenant.id));
    await d.flush();
    expect(await em().findOne(Tenant, tenant.id)).toBeNull();
  });

  it('round-trips members, workers, sandboxes, leases, messages, events, audit entries, tokens and keys', async () => {
    const tenant = await seedTenant();
    const worker = await seedWorker();
    const sandbox = await seedSandbox(tenant, worker);
    const e = em();
    const now = new Date();
    const member = e.create(Member, { tenant: tenant.id, subject: 'oidc|alice', role: 'OPERATOR' });
    const lease = e.create(Lease, {
      sandbox: sandbox.id,
      holder: worker.id,
      fencingToken: '9007199254740991',
      acquiredAt: now,
      renewedAt: now,
      expiresAt: new Date(now.getTime() + 30_000),
      transitions: 1,
    });
    const message = e.create(Message, {
      sandbox: sandbox.id,
      tenant: tenant.id,
      senderKind: 'AGENT',
      senderId: worker.id,
      body: 'hello 👋',
    });
    const event = e.create(Event, {
      type: 'SANDBOX_ASSIGNED',
      tenantId: tenant.id,
      sandboxId: sandbox.id,
      workerId: worker.id,
      data: { from: 'PENDING', to: 'SCHEDULED' },
    });
    const audit = e.create(AuditEntry, {
      tenantId: tenant.id,
      actor: 'platform-admin',
      action: 'createSandbox',
      targetId: sandbox.id,
      outcome: 'ok',
    });
    const token = e.create(ApiToken, { kind: 'API', subject: 'api:ci', tenant: tenant.id, role: 'VIEWER', scopes: [] });
    const key = e.create(SigningKey, {
      alg: 'ES256',
      publicJwk: { kty: 'EC', crv: 'P-256' },
      privateJwk: { kty: 'EC', d: 'x' },
    });
    await e.flush();

    const r = em();
    expect((await r.findOneOrFail(Member, member.id)).role).toBe('OPERATOR');
    const readWorker = await r.findOneOrFail(Worker, worker.id);
    expect(readWorker).toMatchObject({
      status: 'ONLINE',
      allocatedCpuMillis: 0,
      labels: { gpu: 'none' },
      tenant: null,
    });
    const readSandbox = await r.findOneOrFail(Sandbox, sandbox.id);
    expect(readSandbox).toMatchObject({ status: 'PENDING', stateVersion: 0, command: ['python', '-m', 'agent'] });
    expect(readSandbox.worker?.id).toBe(worker.id);
    const readLease = await r.findOneOrFail(Lease, lease.id);
    // 2^53 - 1: the largest token both drivers keep exactly, read back as a decimal string.
    expect(readLease.fencingToken).toBe('9007199254740991');
    expect(readLease.holder.id).toBe(worker.id);
    expect((await r.findOneOrFail(Message, message.id)).body).toBe('hello 👋');
    const readEvent = await r.findOneOrFail(Event, { id: event.id });
    expect(readEvent.data).toEqual({ from: 'PENDING', to: 'SCHEDULED' });
    expect(BigInt(readEvent.id)).toBeGreaterThan(0n);
    expect((await r.findOneOrFail(AuditEntry, audit.id)).outcome).toBe('ok');
    expect((await r.findOneOrFail(ApiToken, token.id)).scopes).toEqual([]);
    expect((await r.findOneOrFail(SigningKey, key.id)).publicJwk).toEqual({ kty: 'EC', crv: 'P-256' });

    const u = em();
    const w = await u.findOneOrFail(Worker, worker.id);
    w.allocatedCpuMillis = 500;
    const s = await u.findOneOrFail(Sandbox, sandbox.id);
    s.status = 'RUNNING';
    s.stateVersion += 1;
    await u.flush();
    expect((await em().findOneOrFail(Worker, worker.id)).allocatedCpuMillis).toBe(500);
    expect(await em().findOneOrFail(Sandbox, sandbox.id)).toMatchObject({ status: 'RUNNING', stateVersion: 1 });

    // Deleting the sandbox removes what hangs off it (lease, messages).
    const d = em();
    d.remove(await d.findOneOrFail(Sandbox, sandbox.id));
    await d.flush();
    expect(await em().findOne(Lease, lease.id)).toBeNull();
    expect(await em().findOne(Message, message.id)).toBeNull();
  });

  it('event ids grow in insertion order', async () => {
    const e = em();
    const created = [1, 2, 3].map((n) => e.create(Event, { type: 'MESSAGE_POSTED', data: { n } }));
    await e.flush();
    const ids = created.map((ev) => BigInt(ev.id));
    expect(ids[1]).toBeGreaterThan(ids[0]);
    expect(ids[2]).toBeGreaterThan(ids[1]);
  });

  it('appends an event with its transaction: committed ⇒ one event, rolled back ⇒ none', async () => {
    const tenant = await seedTenant();
    const count = () => em().count(Event, { tenantId: tenant.id });
    await em().transactional(async (tx) => {
      const t = await tx.findOneOrFail(Tenant, tenant.id);
      t.name = 'changed';
      await appendEvent(tx, { type: 'WORKER_STATUS_CHANGED', tenantId: tenant.id, data: { to: 'ONLINE' } }, new Date());
    });
    expect(await count()).toBe(1);
    await expect(
      em().transactional(async (tx) => {
        const t = await tx.findOneOrFail(Tenant, tenant.id);
        t.name = 'rolled back';
        await appendEvent(tx, { type: 'WORKER_STATUS_CHANGED', tenantId: tenant.id }, new Date());
        throw new Error('abort');
      }),
    ).rejects.toThrow('abort');
    expect(await count()).toBe(1);
    expect((await em().findOneOrFail(Tenant, tenant.id)).name).toBe('changed');
  });

  it('refuses a second tenant with the same slug', async () => {
    await seedTenant('dup-slug');
    await expect(seedTenant('dup-slug')).rejects.toBeInstanceOf(UniqueConstraintViolationException);
    expect(await em().count(Tenant, { slug: 'dup-slug' })).toBe(1);
  });

  it('refuses a second worker with the same name', async () => {
    await seedWorker('dup-worker');
    await expect(seedWorker('dup-worker')).rejects.toBeInstanceOf(UniqueConstraintViolationException);
    expect(await em().count(Worker, { name: 'dup-worker' })).toBe(1);
  });

  it('refuses a member twice in one tenant', async () => {
    const tenant = await seedTenant();
    const e = em();
    e.create(Member, { tenant: tenant.id, subject: 'bob', role: 'VIEWER' });
    await e.flush();
    const again = em();
    again.create(Member, { tenant: tenant.id, subject: 'bob', role: 'ADMIN' });
    await expect(again.flush()).rejects.toBeInstanceOf(UniqueConstraintViolationException);
  });

  it('hides soft-deleted sandboxes from active lists but keeps the row', async () => {
    const tenant = await seedTenant();
    const kept = await seedSandbox(tenant, null, 'kept');
    const gone = await seedSandbox(tenant, null, 'gone');
    const e = em();
    const toDelete = await e.findOneOrFail(Sandbox, gone.id);
    toDelete.status = 'DELETED';
    toDelete.deletedAt = new Date();
    await e.flush();
    const active = await em().find(Sandbox, { tenant: tenant.id, ...ACTIVE_SANDBOX }, { orderBy: { id: 'asc' } });
    expect(active.map((s) => s.id)).toEqual([kept.id]);
    expect((await em().findOneOrFail(Sandbox, gone.id, WITH_DELETED)).status).toBe('DELETED');
  });

  it('stores JSON columns faithfully', async () => {
    const tenant = await seedTenant();
    const sandbox = await seedSandbox(tenant);
    const labels = { nested: { list: [1, 'two', null, true], deep: { x: 1.5 } }, unicode: 'é ✓ 漢字', empty: {} };
    const e = em();
    const s = await e.findOneOrFail(Sandbox, sandbox.id);
    s.labels = labels as unknown as Record<string, string>;
    s.command = ['sh', '-c', 'echo "quoted" && exit 0'];
    await e.flush();
    const read = await em().findOneOrFail(Sandbox, sandbox.id);
    expect(read.labels).toEqual(labels);
    expect(read.command).toEqual(['sh', '-c', 'echo "quoted" && exit 0']);
  });

  it('keeps timestamps to the millisecond', async () => {
    const worker = await seedWorker();
    const at = new Date('2026-03-04T05:06:07.891Z');
    const e = em();
    const w = await e.findOneOrFail(Worker, worker.id);
    w.lastHeartbeatAt = at;
    await e.flush();
    const read = await em().findOneOrFail(Worker, worker.id);
    expect(read.lastHeartbeatAt?.toISOString()).toBe('2026-03-04T05:06:07.891Z');
    expect(read.createdAt.getMilliseconds()).toBe(worker.createdAt.getMilliseconds());
  });

  it('applies migrations once: a second run is a no-op', async () => {
    expect(await pendingMigrations(orm)).toEqual([]);
    expect(await migrate(orm)).toEqual([]);
    const rows = await orm.em.fork().getConnection().execute(`select count(*) as n from ${MIGRATIONS_TABLE}`);
    const count = Number((rows as { n: number | string }[])[0].n);
    expect(count).toBeGreaterThan(0);
    expect(await migrate(orm)).toEqual([]);
    const again = await orm.em.fork().getConnection().execute(`select count(*) as n from ${MIGRATIONS_TABLE}`);
    expect(Number((again as { n: number | string }[])[0].n)).toBe(count);
  });
});

describe('migrations of the two drivers', () => {
  it('produce the same tables and columns, with the same nullability', async () => {
    const [sqlite, postgres] = await Promise.all(
      DRIVERS.map(async (kind) => {
        const orm = await openOrm(parseDatabaseUrl(await freshDatabaseUrl(kind)));
        try {
          await migrate(orm);
          return await describeColumns(orm, kind);
        } finally {
          await orm.close(true);
        }
      }),
    );
    expect(Object.keys(sqlite).length).toBeGreaterThanOrEqual(10);
    expect(sqlite).toEqual(postgres);
  });
});

describe.each(DRIVERS)('checked-in migrations on %s', (kind) => {
  it('match the entity definitions (no schema change is left unmigrated)', async () => {
    const orm = await openOrm(parseDatabaseUrl(await freshDatabaseUrl(kind)));
    try {
      await migrate(orm);
      const diff = await orm.getSchemaGenerator().getUpdateSchemaSQL({ wrap: false });
      expect(await withoutNoOpRebuilds(orm, diff)).toBe('');
    } finally {
      await orm.close(true);
    }
  });
});

/**
 * SQLite's schema diff reports a table rebuild for bigint autoincrement keys even when the
 * rebuilt table is identical; drop such rebuilds (and only those) before comparing.
 */
async function withoutNoOpRebuilds(orm: Orm, diff: string): Promise<string> {
  const lines = diff
    .split('\n')
    .map((l) => l.trim())
    .filter(Boolean);
  const conn = orm.em.fork().getConnection();
  const noOp = new Set<string>();
  for (const line of lines) {
    const m = /^create table `(\w+)__temp_alter` (.*);$/.exec(line);
    if (!m) continue;
    const rows = (await conn.execute(`select sql from sqlite_master where type = 'table' and name = ?`, [m[1]])) as {
      sql: string;
    }[];
    const current = rows[0]?.sql.replace(/^CREATE TABLE `\w+` /i, '').trim();
    if (current === m[2].trim()) noOp.add(m[1]);
  }
  const kept = lines.filter((line) => {
    if (/^pragma foreign_keys = (off|on);$/.test(line)) return false;
    return ![...noOp].some((t) => line.includes(`\`${t}\``) || line.includes(`\`${t}__temp_alter\``));
  });
  return kept.join('\n');
}
