import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Identity } from '../../src/auth/identity.js';
import type { DatabaseKind } from '../../src/config/index.js';
import { AuditEntry } from '../../src/db/entities/audit-entry.js';
import { Tenant } from '../../src/db/entities/tenant.js';
import { Worker } from '../../src/db/entities/worker.js';
import { audited } from '../../src/domain/audit.js';
import { ValidationError } from '../../src/domain/errors.js';
import { DRIVERS } from '../helpers/databases.js';
import {
  acquireLease,
  createSandbox,
  createTenant,
  dataOf,
  ERROR_FIELDS,
  heartbeat,
  registerWorker,
  renewLease,
  TestClock,
  uniqueName,
} from '../helpers/fleet.js';
import { localId, startTestServer, type TestServer } from '../helpers/server.js';

const CREATE_TENANT = `mutation($input: CreateTenantInput!) { createTenant(input: $input) { __typename ... on CreateTenantPayload { tenant { id slug } } ${ERROR_FIELDS} } }`;

/**
 * A database trigger that refuses inserts into `table` matching `when` (SQL on NEW), so a test
 * can make one write of a transaction fail on either driver. Returns its removal.
 */
async function refuseInserts(server: TestServer, kind: DatabaseKind, table: string, when: string) {
  const name = `refuse_${Math.random().toString(36).slice(2, 10)}`;
  const conn = server.app.db.orm.em.getConnection();
  if (kind === 'sqlite') {
    await conn.execute(
      `create trigger ${name} before insert on ${table} when ${when} begin select raise(abort, 'refused by the test'); end`,
    );
    return () => conn.execute(`drop trigger ${name}`);
  }
  await conn.execute(
    `create function ${name}() returns trigger language plpgsql as $$ begin raise exception 'refused by the test'; end $$`,
  );
  await conn.execute(
    `create trigger ${name} before insert on ${table} for each row when (${when}) execute function ${name}()`,
  );
  return async () => {
    await conn.execute(`drop trigger ${name} on ${table}`);
    await conn.execute(`drop function ${name}()`);
  };
}

describe.each(DRIVERS)('audit trail on %s', (kind) => {
  let server: TestServer;
  const clock = new TestClock();

  beforeAll(async () => {
    server = await startTestServer(kind, { clock });
  });
  afterAll(async () => {
    await server?.close();
  });

  const entries = (where: Partial<Pick<AuditEntry, 'action' | 'targetId' | 'outcome'>>) =>
    server.app.db.orm.em.fork().find(AuditEntry, where, { orderBy: { id: 'asc' } });
  const tenantsWithSlug = (slug: string) => server.app.db.orm.em.fork().count(Tenant, { slug });

  it('commits a change and its audit entry together: a failing audit write leaves no change', async () => {
    const slug = uniqueName('atomic');
    const ok = dataOf(
      await server.gql<{ createTenant: { tenant: { id: string } } }>(CREATE_TENANT, { input: { slug, name: slug } }),
    );
    expect(await entries({ action: 'createTenant', targetId: localId(ok.createTenant.tenant.id) })).toMatchObject([
      { outcome: 'ok' },
    ]);

    const undo = await refuseInserts(
      server,
      kind,
      'audit_entries',
      "new.action = 'createTenant' and new.outcome = 'ok'",
    );
    try {
      const refused = uniqueName('atomic');
      const res = await server.gql(CREATE_TENANT, { input: { slug: refused, name: refused } });
      // The change did not commit, so the client is told it failed (not told it worked).
      expect(res.body.errors?.[0]?.extensions?.code).toBe('INTERNAL_SERVER_ERROR');
      expect(await tenantsWithSlug(refused)).toBe(0);
    } finally {
      await undo();
    }
  });

  it('a change rolled back by a failing event append leaves neither the change nor an ok entry', async () => {
    const name = uniqueName('noevent');
    const undo = await refuseInserts(server, kind, 'events', "new.type = 'WORKER_STATUS_CHANGED'");
    try {
      const res = await server.gql(
        'mutation($input: RegisterWorkerInput!) { registerWorker(input: $input) { __typename } }',
        { input: { name, capacity: { cpuMillis: 1000, memoryMb: 1024 } } },
      );
      expect(res.body.errors?.[0]?.extensions?.code).toBe('INTERNAL_SERVER_ERROR');
    } finally {
      await undo();
    }
    expect(await server.app.db.orm.em.fork().count(Worker, { name })).toBe(0);
    expect(await entries({ action: 'registerWorker', outcome: 'ok' })).toHaveLength(0);
  });

  it('a change rolled back by an error thrown after its write leaves no ok entry; the refusal is recorded', async () => {
    const slug = uniqueName('thrown');
    const identity: Identity = {
      subject: 'test:thrower',
      tokenId: 'test',
      source: 'ADMIN',
      platformAdmin: true,
      tenantRoles: new Map(),
      workerId: null,
      scopes: new Set(),
      expiresAt: null,
    };
    const ctx = {
      em: server.app.db.orm.em.fork(),
      identity,
      clock,
      settings: { heartbeatTtlSeconds: 30 },
      bus: server.app.bus,
    };
    const attempt = audited(ctx, 'throwAfterWrite', { targetId: slug }, async (em) => {
      em.create(Tenant, {
        slug,
        name: slug,
        quota: { maxSandboxes: 1, maxCpuMillis: 1, maxMemoryMb: 1 },
        policy: { allowedImages: [], maxSandboxTtlSeconds: null },
        createdAt: clock.now(),
      });
      await em.flush();
      throw new ValidationError('changed my mind', 'input');
    });
    await expect(attempt).rejects.toBeInstanceOf(ValidationError);
    expect(await tenantsWithSlug(slug)).toBe(0);
    expect((await entries({ action: 'throwAfterWrite', targetId: slug })).map((e) => e.outcome)).toEqual([
      'VALIDATION_FAILED',
    ]);
  });

  it('a failing write of a refusal entry does not change what the client is told', async () => {
    const bad = { input: { slug: 'NOT A SLUG', name: 'x' } };
    const answer = async () => dataOf(await server.gql<{ createTenant: unknown }>(CREATE_TENANT, bad)).createTenant;
    const expected = await answer();
    expect(expected).toMatchObject({ __typename: 'ValidationError', code: 'VALIDATION_FAILED' });
    const before = (await entries({ action: 'createTenant', outcome: 'VALIDATION_FAILED' })).length;

    const undo = await refuseInserts(server, kind, 'audit_entries', "new.outcome <> 'ok'");
    try {
      expect(await answer()).toEqual(expected);
    } finally {
      await undo();
    }
    expect(await entries({ action: 'createTenant', outcome: 'VALIDATION_FAILED' })).toHaveLength(before);
  });

  it('records heartbeats and lease renewals only when they change state, not one row each', async () => {
    const tenantId = await createTenant(server, uniqueName('hb'));
    const worker = await registerWorker(server, uniqueName('hbw'), { tenantId });
    const sandbox = (await createSandbox(server, tenantId)).sandbox;
    const lease = await acquireLease(server, worker, sandbox.id);
    for (let i = 0; i < 20; i++) {
      expect((await heartbeat(server, worker)).__typename).toBe('WorkerPayload');
      expect((await renewLease(server, worker, sandbox.id, lease.lease.fencingToken)).__typename).toBe('LeasePayload');
    }
    expect(await entries({ action: 'heartbeat', targetId: localId(worker.id) })).toHaveLength(0);
    expect(await entries({ action: 'renewLease', targetId: localId(sandbox.id) })).toHaveLength(0);

    // Silent past its TTL, the worker reads OFFLINE; the heartbeat that brings it back is a state change.
    clock.advance(31);
    await heartbeat(server, worker);
    await heartbeat(server, worker);
    expect(await entries({ action: 'heartbeat', targetId: localId(worker.id) })).toMatchObject([{ outcome: 'ok' }]);

    // Refusals are still recorded: a stale token.
    const stale = await renewLease(server, worker, sandbox.id, '999');
    expect(stale).toMatchObject({ code: 'STALE_FENCING_TOKEN' });
    expect(await entries({ action: 'renewLease', targetId: localId(sandbox.id) })).toMatchObject([
      { outcome: 'STALE_FENCING_TOKEN' },
    ]);
  });

  it('prunes audit entries older than the retention period in the sweeper', async () => {
    const old = localId(await createTenant(server, uniqueName('old')));
    const retention = 90 * 24 * 3600;
    clock.advance(retention - 10);
    const recent = localId(await createTenant(server, uniqueName('recent')));
    clock.advance(20);
    await server.app.sweeper.runOnce();
    expect(await entries({ action: 'createTenant', targetId: old })).toHaveLength(0);
    expect(await entries({ action: 'createTenant', targetId: recent })).toHaveLength(1);
  });
});
