import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AuditEntry } from '../../src/db/entities/audit-entry.js';
import { DRIVERS } from '../helpers/databases.js';
import {
  acquireLease,
  createSandbox,
  createTenant,
  dataOf,
  ERROR_FIELDS,
  getSandbox,
  heartbeat,
  registerWorker,
  releaseLease,
  renewLease,
  reportStatus,
  TestClock,
  uniqueName,
} from '../helpers/fleet.js';
import { localId, startTestServer, type TestServer } from '../helpers/server.js';

type Typed = { __typename: string; code?: string; message?: string } & Record<string, unknown>;

describe.each(DRIVERS)('domain API on %s', (kind) => {
  let server: TestServer;
  const clock = new TestClock();

  beforeAll(async () => {
    server = await startTestServer(kind, { clock });
  });
  afterAll(async () => {
    await server?.close();
  });

  async function mutate(
    field: string,
    inputType: string,
    input: Record<string, unknown>,
    token?: string,
    selection = '',
  ): Promise<Typed> {
    const res = await server.gql<Record<string, Typed>>(
      `mutation($input: ${inputType}!) { ${field}(input: $input) { __typename ${selection} ${ERROR_FIELDS} } }`,
      { input },
      token,
    );
    return dataOf(res)[field];
  }

  describe('tenants and members', () => {
    it('updates name and policy as tenant ADMIN, quota only as platform admin', async () => {
      const tenantId = await createTenant(server, uniqueName('upd'));
      const admin = await server.apiToken(localId(tenantId), 'ADMIN', uniqueName('admin'));
      const renamed = await mutate(
        'updateTenant',
        'UpdateTenantInput',
        { tenantId, name: 'Renamed', policy: { allowedImages: ['ghcr.io/acme/*'], maxSandboxTtlSeconds: 600 } },
        admin,
        '... on UpdateTenantPayload { tenant { name policy { allowedImages maxSandboxTtlSeconds } } }',
      );
      expect(renamed).toMatchObject({
        __typename: 'UpdateTenantPayload',
        tenant: { name: 'Renamed', policy: { allowedImages: ['ghcr.io/acme/*'], maxSandboxTtlSeconds: 600 } },
      });
      expect(
        await mutate('updateTenant', 'UpdateTenantInput', { tenantId, quota: { maxSandboxes: 1000 } }, admin),
      ).toMatchObject({ __typename: 'ForbiddenError', code: 'FORBIDDEN' });
      const raised = await mutate(
        'updateTenant',
        'UpdateTenantInput',
        { tenantId, quota: { maxSandboxes: 50 } },
        undefined,
        '... on UpdateTenantPayload { tenant { quota { maxSandboxes maxCpuMillis } } }',
      );
      expect(raised).toMatchObject({ tenant: { quota: { maxSandboxes: 50, maxCpuMillis: 8000 } } });
      expect(await mutate('updateTenant', 'UpdateTenantInput', { tenantId, name: '   ' })).toMatchObject({
        __typename: 'ValidationError',
        code: 'VALIDATION_FAILED',
      });
      // A malformed id or one of another type is refused like every malformed id (issue 11, part 5).
      for (const bad of ['not-an-id', Buffer.from('Sandbox:x').toString('base64url')]) {
        expect(await mutate('updateTenant', 'UpdateTenantInput', { tenantId: bad, name: 'x' })).toMatchObject({
          __typename: 'ValidationError',
          code: 'VALIDATION_FAILED',
        });
      }
      const operator = await server.apiToken(localId(tenantId), 'OPERATOR', uniqueName('op'));
      expect(await mutate('updateTenant', 'UpdateTenantInput', { tenantId, name: 'x' }, operator)).toMatchObject({
        __typename: 'ForbiddenError',
      });
    });

    it('adds, re-roles and removes members; the audit trail is for ADMINs', async () => {
      const tenantId = await createTenant(server, uniqueName('mem'));
      const added = await mutate(
        'addMember',
        'AddMemberInput',
        { tenantId, subject: 'alice', role: 'VIEWER' },
        undefined,
        '... on AddMemberPayload { member { id subject role } }',
      );
      expect(added).toMatchObject({ __typename: 'AddMemberPayload', member: { subject: 'alice', role: 'VIEWER' } });
      const rerole = await mutate(
        'addMember',
        'AddMemberInput',
        { tenantId, subject: 'alice', role: 'OPERATOR' },
        undefined,
        '... on AddMemberPayload { member { id role } }',
      );
      expect(rerole).toMatchObject({ member: { id: (added.member as { id: string }).id, role: 'OPERATOR' } });
      expect(await mutate('addMember', 'AddMemberInput', { tenantId, subject: '', role: 'VIEWER' })).toMatchObject({
        __typename: 'ValidationError',
      });
      const viewer = await server.apiToken(localId(tenantId), 'VIEWER', uniqueName('v'));
      expect(
        await mutate('addMember', 'AddMemberInput', { tenantId, subject: 'bob', role: 'ADMIN' }, viewer),
      ).toMatchObject({ __typename: 'ForbiddenError' });

      const memberId = (added.member as { id: string }).id;
      const node = dataOf(
        await server.gql<{ node: { subject: string } | null }>(
          'query($id: ID!) { node(id: $id) { ... on Member { subject } } }',
          { id: memberId },
        ),
      );
      expect(node.node).toEqual({ subject: 'alice' });
      const stranger = await server.apiToken(
        localId(await createTenant(server, uniqueName('str'))),
        'ADMIN',
        uniqueName('s'),
      );
      expect(
        dataOf(
          await server.gql<{ node: unknown }>('query($id: ID!) { node(id: $id) { id } }', { id: memberId }, stranger),
        ).node,
      ).toBeNull();
      const members = dataOf(
        await server.gql<{ tenant: { members: { totalCount: number } } }>(
          'query($id: ID!) { tenant(id: $id) { members { totalCount } } }',
          { id: tenantId },
        ),
      );
      expect(members.tenant.members.totalCount).toBe(1);
      const removed = await mutate(
        'removeMember',
        'RemoveMemberInput',
        { memberId: (added.member as { id: string }).id },
        undefined,
        '... on RemoveMemberPayload { subject }',
      );
      expect(removed).toMatchObject({ __typename: 'RemoveMemberPayload', subject: 'alice' });
      expect(
        await mutate('removeMember', 'RemoveMemberInput', { memberId: (added.member as { id: string }).id }),
      ).toMatchObject({ __typename: 'NotFoundError', code: 'NOT_FOUND' });

      const audit = dataOf(
        await server.gql<{
          tenant: { auditEntries: { edges: { node: { action: string; outcome: string; actor: string } }[] } };
        }>(
          'query($id: ID!) { tenant(id: $id) { auditEntries(first: 100) { edges { node { action outcome actor } } } } }',
          { id: tenantId },
        ),
      );
      const actions = audit.tenant.auditEntries.edges.map((e) => `${e.node.action}:${e.node.outcome}`);
      expect(actions).toEqual(
        expect.arrayContaining(['createTenant:ok', 'addMember:ok', 'addMember:VALIDATION_FAILED', 'removeMember:ok']),
      );
      const entryId = dataOf(
        await server.gql<{ tenant: { auditEntries: { edges: { node: { id: string } }[] } } }>(
          'query($id: ID!) { tenant(id: $id) { auditEntries(first: 1) { edges { node { id } } } } }',
          { id: tenantId },
        ),
      ).tenant.auditEntries.edges[0].node.id;
      expect(
        dataOf(
          await server.gql<{ node: unknown }>('query($id: ID!) { node(id: $id) { ... on AuditEntry { action } } }', {
            id: entryId,
          }),
        ).node,
      ).toEqual({ action: 'createTenant' });
      expect(
        dataOf(await server.gql<{ node: unknown }>('query($id: ID!) { node(id: $id) { id } }', { id: entryId }, viewer))
          .node,
      ).toBeNull();
      const asViewer = await server.gql(
        'query($id: ID!) { tenant(id: $id) { auditEntries { totalCount } } }',
        { id: tenantId },
        viewer,
      );
      expect(asViewer.body.errors?.[0].extensions?.code).toBe('FORBIDDEN');
    });
  });

  describe('workers', () => {
    it('registers shared and dedicated workers, drains, rotates tokens and deletes', async () => {
      const tenantId = await createTenant(server, uniqueName('wk'));
      const tenantAdmin = await server.apiToken(localId(tenantId), 'ADMIN', uniqueName('ta'));
      const operator = await server.apiToken(localId(tenantId), 'OPERATOR', uniqueName('to'));
      const name = uniqueName('ded');
      const dedicated = await registerWorker(server, name, { tenantId, token: tenantAdmin });
      expect(
        await mutate(
          'registerWorker',
          'RegisterWorkerInput',
          { name: uniqueName('x'), capacity: { cpuMillis: 1, memoryMb: 1 } },
          tenantAdmin,
        ),
      ).toMatchObject({ __typename: 'ForbiddenError' });
      expect(
        await mutate(
          'registerWorker',
          'RegisterWorkerInput',
          { name: uniqueName('x'), tenantId, capacity: { cpuMillis: 1, memoryMb: 1 } },
          operator,
        ),
      ).toMatchObject({ __typename: 'ForbiddenError' });
      expect(
        await mutate('registerWorker', 'RegisterWorkerInput', { name, capacity: { cpuMillis: 1, memoryMb: 1 } }),
      ).toMatchObject({ __typename: 'AlreadyExistsError', code: 'ALREADY_EXISTS' });
      expect(
        await mutate('registerWorker', 'RegisterWorkerInput', {
          name: uniqueName('x'),
          capacity: { cpuMillis: 0, memoryMb: 1 },
        }),
      ).toMatchObject({ __typename: 'ValidationError' });
      expect(
        await mutate('registerWorker', 'RegisterWorkerInput', {
          name: uniqueName('x'),
          tenantId: 'bogus',
          capacity: { cpuMillis: 1, memoryMb: 1 },
        }),
      ).toMatchObject({ __typename: 'ValidationError', code: 'VALIDATION_FAILED' });

      const viewerOfTenant = await server.apiToken(localId(tenantId), 'VIEWER', uniqueName('tv'));
      const seen = dataOf(
        await server.gql<{ tenant: { workers: { edges: { node: { id: string; tenant: { id: string } } }[] } } }>(
          'query($id: ID!) { tenant(id: $id) { workers { edges { node { id tenant { id } } } } } }',
          { id: tenantId },
          viewerOfTenant,
        ),
      );
      expect(seen.tenant.workers.edges.map((e) => e.node)).toEqual([{ id: dedicated.id, tenant: { id: tenantId } }]);

      const beat = await heartbeat(server, dedicated, { version: '1.2.3', observed: { cpuMillis: 100 } });
      expect(beat).toMatchObject({ __typename: 'WorkerPayload', worker: { status: 'ONLINE' } });
      expect(
        await heartbeat(server, dedicated, { workerId: (await registerWorker(server, uniqueName('other'))).id }),
      ).toMatchObject({ __typename: 'ForbiddenError' });
      const asPerson = await server.gql<{ heartbeat: Typed }>(
        'mutation { heartbeat(input: {}) { __typename ... on Error { code } } }',
      );
      expect(dataOf(asPerson).heartbeat).toMatchObject({ __typename: 'ForbiddenError' });

      const drained = await mutate(
        'drainWorker',
        'WorkerRefInput',
        { workerId: dedicated.id },
        tenantAdmin,
        '... on WorkerPayload { worker { status } }',
      );
      expect(drained).toMatchObject({ worker: { status: 'DRAINING' } });
      const noRoom = await createSandbox(server, tenantId, { placement: { workerLabels: { only: 'dedicated' } } });
      expect(noRoom.__typename).toBe('SandboxPayload');
      expect(noRoom.sandbox.status).toBe('PENDING');

      const rotated = await mutate(
        'rotateWorkerToken',
        'WorkerRefInput',
        { workerId: dedicated.id },
        tenantAdmin,
        '... on RegisterWorkerPayload { token }',
      );
      expect(rotated.__typename).toBe('RegisterWorkerPayload');
      const oldTokenUse = await server.gql(
        'mutation { heartbeat(input: {}) { __typename } }',
        undefined,
        dedicated.token,
      );
      expect(oldTokenUse.status).toBe(401);
      const newTokenUse = await heartbeat(server, { ...dedicated, token: rotated.token as string });
      expect(newTokenUse.__typename).toBe('WorkerPayload');

      // Another tenant's admin cannot see or touch it: it reads as missing.
      const otherTenant = await createTenant(server, uniqueName('other'));
      const otherAdmin = await server.apiToken(localId(otherTenant), 'ADMIN', uniqueName('oa'));
      expect(await mutate('drainWorker', 'WorkerRefInput', { workerId: dedicated.id }, otherAdmin)).toMatchObject({
        __typename: 'NotFoundError',
      });
      const otherRead = dataOf(
        await server.gql<{ worker: unknown }>(
          'query($id: ID!) { worker(id: $id) { id } }',
          { id: dedicated.id },
          otherAdmin,
        ),
      );
      expect(otherRead.worker).toBeNull();

      const deleted = await mutate(
        'deleteWorker',
        'WorkerRefInput',
        { workerId: dedicated.id },
        tenantAdmin,
        '... on WorkerPayload { worker { status } }',
      );
      expect(deleted).toMatchObject({ __typename: 'WorkerPayload', worker: { status: 'OFFLINE' } });
      expect(
        dataOf(
          await server.gql<{ worker: unknown }>('query($id: ID!) { worker(id: $id) { id } }', { id: dedicated.id }),
        ).worker,
      ).toBeNull();
    });

    it('refuses to delete a worker while it holds a lease, then loses and re-places its sandboxes', async () => {
      const tenantId = await createTenant(server, uniqueName('del'));
      const pool = uniqueName('pool');
      const worker = await registerWorker(server, uniqueName('holder'), { labels: { pool } });
      const created = await createSandbox(server, tenantId, { placement: { workerLabels: { pool } } });
      const lease = await acquireLease(server, worker, created.sandbox.id);
      expect(await mutate('deleteWorker', 'WorkerRefInput', { workerId: worker.id })).toMatchObject({
        __typename: 'LeaseConflictError',
        code: 'LEASE_CONFLICT',
      });
      await releaseLease(server, worker, created.sandbox.id, lease.lease.fencingToken);
      expect((await mutate('deleteWorker', 'WorkerRefInput', { workerId: worker.id })).__typename).toBe(
        'WorkerPayload',
      );
      expect(await getSandbox(server, created.sandbox.id)).toMatchObject({
        status: 'LOST',
        statusReason: 'worker deleted',
      });
      const replacement = await registerWorker(server, uniqueName('repl'), { labels: { pool } });
      await server.app.sweeper.runOnce();
      expect(await getSandbox(server, created.sandbox.id)).toMatchObject({
        status: 'SCHEDULED',
        worker: { id: replacement.id },
      });
      // The deleted worker's token is revoked with it.
      expect(
        (await server.gql('mutation { heartbeat(input: {}) { __typename } }', undefined, worker.token)).status,
      ).toBe(401);
    });

    it('reads a worker with a stale heartbeat as OFFLINE and filters by status', async () => {
      const worker = await registerWorker(server, uniqueName('stale'));
      clock.advance(31);
      const res = dataOf(
        await server.gql<{ worker: { status: string }; workers: { edges: { node: { id: string } }[] } }>(
          'query($id: ID!) { worker(id: $id) { status } workers(first: 100, status: [OFFLINE]) { edges { node { id } } } }',
          { id: worker.id },
        ),
      );
      expect(res.worker.status).toBe('OFFLINE');
      expect(res.workers.edges.map((e) => e.node.id)).toContain(worker.id);
      await heartbeat(server, worker);
      const online = dataOf(
        await server.gql<{ workers: { edges: { node: { id: string } }[] } }>(
          '{ workers(first: 100, status: [ONLINE]) { edges { node { id } } } }',
        ),
      );
      expect(online.workers.edges.map((e) => e.node.id)).toContain(worker.id);
    });
  });

  describe('sandboxes', () => {
    it('enforces policy, quota and capacity with typed errors', async () => {
      const tenantId = await createTenant(server, uniqueName('pol'), {
        quota: { maxSandboxes: 5, maxCpuMillis: 1000, maxMemoryMb: 4096 },
        policy: { allowedImages: ['ghcr.io/acme/*'], maxSandboxTtlSeconds: 3600 },
      });
      await registerWorker(server, uniqueName('polw'), { tenantId });
      expect(await createSandbox(server, tenantId, { image: 'docker.io/evil:latest', ttlSeconds: 60 })).toMatchObject({
        __typename: 'PolicyViolationError',
        code: 'POLICY_VIOLATION',
      });
      const ttl = await createSandbox(server, tenantId, { ttlSeconds: 7200 });
      expect(ttl).toMatchObject({ __typename: 'PolicyViolationError', code: 'POLICY_VIOLATION' });
      expect(
        await createSandbox(server, tenantId, { ttlSeconds: 60, resources: { cpuMillis: 2000, memoryMb: 10 } }),
      ).toMatchObject({ __typename: 'QuotaExceededError', code: 'QUOTA_EXCEEDED' });
      expect(await createSandbox(server, tenantId, { ttlSeconds: 60, name: '' })).toMatchObject({
        __typename: 'ValidationError',
      });
      expect(
        await createSandbox(server, tenantId, { ttlSeconds: 60, resources: { cpuMillis: 900, memoryMb: 4000 } }),
      ).toMatchObject({ __typename: 'SandboxPayload' });

      const big = await createTenant(server, uniqueName('big'), {
        quota: { maxSandboxes: 5, maxCpuMillis: 10_000_000, maxMemoryMb: 10_000_000 },
      });
      expect(await createSandbox(server, big, { resources: { cpuMillis: 9_000_000, memoryMb: 1 } })).toMatchObject({
        __typename: 'NoCapacityError',
        code: 'NO_CAPACITY',
      });

      const viewer = await server.apiToken(localId(tenantId), 'VIEWER', uniqueName('sv'));
      expect(await createSandbox(server, tenantId, { ttlSeconds: 60 }, viewer)).toMatchObject({
        __typename: 'ForbiddenError',
      });
      // A tenant that does not exist answers exactly like one the caller cannot see.
      const other = await createTenant(server, uniqueName('oth'));
      const otherOperator = await server.apiToken(localId(other), 'OPERATOR', uniqueName('oo'));
      const missing = Buffer.from('Tenant:00000000-0000-7000-8000-000000000000').toString('base64url');
      const [foreign, absent] = await Promise.all([
        createSandbox(server, tenantId, { ttlSeconds: 60 }, otherOperator),
        createSandbox(server, missing, { ttlSeconds: 60 }, otherOperator),
      ]);
      expect(foreign).toEqual(absent);
    });

    it('hides another tenant’s sandbox exactly like a missing id', async () => {
      const mine = await createTenant(server, uniqueName('mine'));
      const theirs = await createTenant(server, uniqueName('theirs'));
      await registerWorker(server, uniqueName('hw'), { tenantId: theirs });
      const theirSandbox = (await createSandbox(server, theirs)).sandbox.id;
      const me = await server.apiToken(localId(mine), 'ADMIN', uniqueName('me'));
      const missing = Buffer.from('Sandbox:00000000-0000-7000-8000-000000000000').toString('base64url');
      for (const id of [theirSandbox, missing]) {
        expect(await getSandbox(server, id, me)).toBeNull();
        expect(
          dataOf(await server.gql<{ node: unknown }>('query($id: ID!) { node(id: $id) { id } }', { id }, me)).node,
        ).toBeNull();
        const stop = await mutate('stopSandbox', 'SandboxRefInput', { sandboxId: id }, me);
        expect(stop).toEqual({
          __typename: 'NotFoundError',
          code: 'NOT_FOUND',
          message: `Sandbox ${localId(id)} not found`,
        });
        const msg = await mutate('sendMessage', 'SendMessageInput', { sandboxId: id, body: 'hi' }, me);
        expect(msg.__typename).toBe('NotFoundError');
        const list = await server.gql<{ messages: unknown }>(
          'query($id: ID!) { messages(sandboxId: $id) { totalCount } }',
          { id },
          me,
        );
        expect(list.body.errors?.[0].extensions?.code).toBe('NOT_FOUND');
      }
      const listOther = await server.gql(
        'query($t: ID!) { sandboxes(tenantId: $t) { totalCount } }',
        { t: theirs },
        me,
      );
      expect(listOther.body.errors?.[0].extensions?.code).toBe('FORBIDDEN');
    });

    it('filters and pages sandboxes in a stable order', async () => {
      const tenantId = await createTenant(server, uniqueName('filt'), {
        quota: { maxSandboxes: 20, maxCpuMillis: 100_000, maxMemoryMb: 100_000 },
      });
      const pool = uniqueName('pool');
      const worker = await registerWorker(server, uniqueName('fw'), { tenantId, cpuMillis: 1000, labels: { pool } });
      for (let i = 0; i < 5; i++) {
        await createSandbox(server, tenantId, {
          name: `alpha-${i}`,
          labels: { team: i % 2 ? 'odd' : 'even' },
          placement: { workerLabels: { pool } },
        });
      }
      const q = `query($t: ID!, $f: SandboxFilter, $after: String) { sandboxes(tenantId: $t, first: 2, after: $after, filter: $f) { totalCount pageInfo { hasNextPage endCursor } edges { node { name status } } } }`;
      type Page = {
        sandboxes: {
          totalCount: number;
          pageInfo: { hasNextPage: boolean; endCursor: string };
          edges: { node: { name: string; status: string } }[];
        };
      };
      const names: string[] = [];
      let after: string | null = null;
      for (;;) {
        const page: Page = dataOf(await server.gql<Page>(q, { t: tenantId, after }));
        names.push(...page.sandboxes.edges.map((e) => e.node.name));
        if (!page.sandboxes.pageInfo.hasNextPage) break;
        after = page.sandboxes.pageInfo.endCursor;
      }
      expect(names).toEqual(['alpha-0', 'alpha-1', 'alpha-2', 'alpha-3', 'alpha-4']);
      const odd = dataOf(
        await server.gql<Page>(q.replace('first: 2', 'first: 10'), { t: tenantId, f: { label: { team: 'odd' } } }),
      );
      expect(odd.sandboxes.edges.map((e) => e.node.name)).toEqual(['alpha-1', 'alpha-3']);
      const pending = dataOf(
        await server.gql<Page>(q.replace('first: 2', 'first: 10'), { t: tenantId, f: { status: ['PENDING'] } }),
      );
      expect(pending.sandboxes.totalCount).toBe(3);
      const onWorker = dataOf(
        await server.gql<Page>(q.replace('first: 2', 'first: 10'), {
          t: tenantId,
          f: { workerId: worker.id, nameContains: 'a-1' },
        }),
      );
      expect(onWorker.sandboxes.edges.map((e) => e.node.name)).toEqual(['alpha-1']);
      // nameContains is a plain, case-insensitive substring: `_` and `%` are characters, not wildcards.
      const containing = async (needle: string) =>
        dataOf(
          await server.gql<Page>(q.replace('first: 2', 'first: 10'), { t: tenantId, f: { nameContains: needle } }),
        ).sandboxes.edges.map((e) => e.node.name);
      expect(await containing('a_1')).toEqual([]);
      expect(await containing('%')).toEqual([]);
      expect(await containing('HA-3')).toEqual(['alpha-3']);
      const noWorker = await server.gql<Page>(q, { t: tenantId, f: { workerId: 'bogus' } });
      expect(noWorker.body.errors?.[0].extensions?.code).toBe('VALIDATION_FAILED');
      const tooMany = await server.gql(q.replace('first: 2', 'first: 101'), { t: tenantId });
      expect(tooMany.body.errors?.[0].extensions?.code).toBe('VALIDATION_FAILED');
    });

    it('answers invalid transitions with InvalidTransitionError', async () => {
      const tenantId = await createTenant(server, uniqueName('inv'));
      const created = await createSandbox(server, tenantId);
      await mutate('deleteSandbox', 'SandboxRefInput', { sandboxId: created.sandbox.id });
      const again = await mutate('deleteSandbox', 'SandboxRefInput', { sandboxId: created.sandbox.id });
      expect(again.__typename).toBe('NotFoundError');
      const pool = uniqueName('pool');
      const w = await registerWorker(server, uniqueName('iw'), { labels: { pool } });
      const s = await createSandbox(server, tenantId, { placement: { workerLabels: { pool } } });
      const lease = await acquireLease(server, w, s.sandbox.id);
      expect(await reportStatus(server, w, s.sandbox.id, lease.lease.fencingToken, 'PENDING')).toMatchObject({
        __typename: 'InvalidTransitionError',
        code: 'INVALID_TRANSITION',
      });
      await reportStatus(server, w, s.sandbox.id, lease.lease.fencingToken, 'FAILED', { reason: 'boom', exitCode: 2 });
      expect(await reportStatus(server, w, s.sandbox.id, lease.lease.fencingToken, 'RUNNING')).toMatchObject({
        __typename: 'InvalidTransitionError',
      });
      expect(await getSandbox(server, s.sandbox.id)).toMatchObject({
        status: 'FAILED',
        statusReason: 'boom',
        exitCode: 2,
      });
    });
  });

  describe('leases', () => {
    it('lets only the holder renew or release, with its current token', async () => {
      const tenantId = await createTenant(server, uniqueName('lease'));
      const pool = uniqueName('pool');
      const a = await registerWorker(server, uniqueName('la'), { labels: { pool } });
      const id = (await createSandbox(server, tenantId, { placement: { workerLabels: { pool } } })).sandbox.id;
      // Placed on A, which holds no lease yet.
      expect(await renewLease(server, a, id, '1')).toMatchObject({
        __typename: 'LeaseConflictError',
        code: 'LEASE_CONFLICT',
      });
      const held = await acquireLease(server, a, id, 30);
      expect(held.lease).toMatchObject({ fencingToken: '1', transitions: 0, holder: { id: a.id } });
      expect(await renewLease(server, a, id, '7')).toMatchObject({
        __typename: 'StaleFencingTokenError',
        presented: '7',
        current: '1',
      });
      expect(await renewLease(server, a, id, 'abc')).toMatchObject({ __typename: 'ValidationError' });
      expect(await acquireLease(server, a, id, 100_000)).toMatchObject({ __typename: 'ValidationError' });
      clock.advance(20);
      const renewed = await renewLease(server, a, id, '1', 30);
      expect(new Date(renewed.lease.expiresAt).getTime()).toBe(clock.now().getTime() + 30_000);
      // Re-acquiring a lease one already holds still moves the token on.
      expect((await acquireLease(server, a, id)).lease.fencingToken).toBe('2');
      expect((await releaseLease(server, a, id, '2')).__typename).toBe('LeasePayload');
      expect(await renewLease(server, a, id, '2')).toMatchObject({ __typename: 'LeaseConflictError' });
      expect(await releaseLease(server, a, id, '2')).toMatchObject({ __typename: 'LeaseConflictError' });
      expect((await acquireLease(server, a, id)).lease).toMatchObject({
        fencingToken: '3',
        transitions: 0,
        holder: { id: a.id },
      });

      const personal = await server.gql<{ acquireLease: Typed }>(
        'mutation($i: AcquireLeaseInput!) { acquireLease(input: $i) { __typename } }',
        { i: { sandboxId: id } },
      );
      expect(dataOf(personal).acquireLease.__typename).toBe('ForbiddenError');
      const missing = Buffer.from('Sandbox:00000000-0000-7000-8000-000000000000').toString('base64url');
      expect(await acquireLease(server, a, missing)).toMatchObject({ __typename: 'NotFoundError' });
    });

    it('lets only the worker a sandbox is placed on acquire its lease; to any other it reads as missing', async () => {
      const tenantId = await createTenant(server, uniqueName('bound'));
      const otherTenant = await createTenant(server, uniqueName('bound-other'));
      const pool = uniqueName('pool');
      const placed = await registerWorker(server, uniqueName('placed'), { tenantId, labels: { pool } });
      const sameTenant = await registerWorker(server, uniqueName('sibling'), { tenantId });
      const shared = await registerWorker(server, uniqueName('shared'));
      const foreign = await registerWorker(server, uniqueName('foreign'), { tenantId: otherTenant });
      const created = await createSandbox(server, tenantId, { placement: { workerLabels: { pool } } });
      const id = created.sandbox.id;
      expect(created.sandbox.worker?.id).toBe(placed.id);

      const missing = Buffer.from('Sandbox:00000000-0000-7000-8000-0000000000ff').toString('base64url');
      /** The answer with the id asked about taken out: a present sandbox must answer like a missing one. */
      const shapeOf = (result: Typed, asked: string) => ({
        __typename: result.__typename,
        code: result.code,
        message: result.message?.replace(localId(asked), '<id>'),
      });
      const asMissing = shapeOf(await acquireLease(server, sameTenant, missing), missing);
      expect(asMissing).toEqual({ __typename: 'NotFoundError', code: 'NOT_FOUND', message: 'Sandbox <id> not found' });
      const strangers = [sameTenant, shared, foreign];
      for (const worker of strangers) {
        expect(shapeOf(await acquireLease(server, worker, id), id)).toEqual(asMissing);
        expect(shapeOf(await renewLease(server, worker, id, '1'), id)).toEqual(asMissing);
        expect(shapeOf(await releaseLease(server, worker, id, '1'), id)).toEqual(asMissing);
        expect(shapeOf(await reportStatus(server, worker, id, '1', 'RUNNING'), id)).toEqual(asMissing);
      }
      // Nothing moved: no lease, the same placement.
      expect(await getSandbox(server, id)).toMatchObject({ lease: null, worker: { id: placed.id }, stateVersion: 1 });

      const lease = await acquireLease(server, placed, id, 1);
      expect(lease.lease).toMatchObject({ fencingToken: '1', holder: { id: placed.id } });
      for (const worker of strangers) {
        expect(shapeOf(await acquireLease(server, worker, id), id)).toEqual(asMissing);
        expect(shapeOf(await reportStatus(server, worker, id, '1', 'RUNNING'), id)).toEqual(asMissing);
      }

      // Its lease runs out while it is drained: the sandbox is LOST and waits, placed nowhere.
      expect((await mutate('drainWorker', 'WorkerRefInput', { workerId: placed.id })).__typename).toBe('WorkerPayload');
      clock.advance(2);
      await heartbeat(server, placed);
      await server.app.sweeper.runOnce();
      expect(await getSandbox(server, id)).toMatchObject({ status: 'LOST' });
      for (const worker of [placed, ...strangers]) {
        expect(shapeOf(await acquireLease(server, worker, id), id)).toEqual(asMissing);
      }

      // Placed again, the worker it is placed on takes the lease over with the next token.
      expect((await mutate('undrainWorker', 'WorkerRefInput', { workerId: placed.id })).__typename).toBe(
        'WorkerPayload',
      );
      await server.app.sweeper.runOnce();
      expect(await getSandbox(server, id)).toMatchObject({ status: 'SCHEDULED', worker: { id: placed.id } });
      expect(shapeOf(await acquireLease(server, shared, id), id)).toEqual(asMissing);
      expect((await acquireLease(server, placed, id)).lease).toMatchObject({
        fencingToken: '2',
        holder: { id: placed.id },
      });
    });
  });

  describe('messages', () => {
    it('sends, posts, pages newest-last and marks read; bodies over 64 KiB are refused', async () => {
      const tenantId = await createTenant(server, uniqueName('msg'));
      const pool = uniqueName('pool');
      const w = await registerWorker(server, uniqueName('mw'), { labels: { pool } });
      const id = (await createSandbox(server, tenantId, { placement: { workerLabels: { pool } } })).sandbox.id;
      const token = (await acquireLease(server, w, id)).lease.fencingToken;
      const sent = await mutate(
        'sendMessage',
        'SendMessageInput',
        { sandboxId: id, body: 'hello agent' },
        undefined,
        '... on MessagePayload { posted { id threadId channel senderKind senderId body readAt sandbox { id } } }',
      );
      expect(sent).toMatchObject({
        __typename: 'MessagePayload',
        posted: {
          threadId: 'main',
          channel: 'api',
          senderKind: 'USER',
          senderId: 'platform-admin',
          body: 'hello agent',
          readAt: null,
          sandbox: { id },
        },
      });
      const asWorker = dataOf(
        await server.gql<{
          sandbox: { tenant: { id: string }; worker: { id: string }; messages: { totalCount: number } };
        }>(
          'query($id: ID!) { sandbox(id: $id) { tenant { id } worker { id } messages { totalCount } } }',
          { id },
          w.token,
        ),
      );
      expect(asWorker.sandbox).toEqual({ tenant: { id: tenantId }, worker: { id: w.id }, messages: { totalCount: 1 } });
      const posted = await mutate(
        'postAgentMessage',
        'PostAgentMessageInput',
        { sandboxId: id, fencingToken: token, body: 'hello human' },
        w.token,
        '... on MessagePayload { posted { senderKind senderId } }',
      );
      expect(posted).toMatchObject({ posted: { senderKind: 'AGENT', senderId: localId(w.id) } });
      await mutate('sendMessage', 'SendMessageInput', {
        sandboxId: id,
        body: 'side',
        threadId: 'other',
        channel: 'web',
      });
      expect(
        await mutate('sendMessage', 'SendMessageInput', { sandboxId: id, body: 'x'.repeat(64 * 1024 + 1) }),
      ).toMatchObject({ __typename: 'ValidationError', code: 'VALIDATION_FAILED' });
      expect(
        (await mutate('sendMessage', 'SendMessageInput', { sandboxId: id, body: 'y'.repeat(64 * 1024) })).__typename,
      ).toBe('MessagePayload');

      type Conn = {
        messages: {
          totalCount: number;
          pageInfo: { hasNextPage: boolean; endCursor: string };
          edges: { node: { body: string; readAt: string | null } }[];
        };
      };
      const first = dataOf(
        await server.gql<Conn>(
          'query($id: ID!) { messages(sandboxId: $id, threadId: "main", first: 1) { totalCount pageInfo { hasNextPage endCursor } edges { node { body readAt } } } }',
          { id },
        ),
      );
      expect(first.messages.totalCount).toBe(3);
      expect(first.messages.edges.map((e) => e.node.body)).toEqual(['hello agent']);
      const rest = dataOf(
        await server.gql<Conn>(
          'query($id: ID!, $after: String) { messages(sandboxId: $id, threadId: "main", first: 5, after: $after) { totalCount pageInfo { hasNextPage endCursor } edges { node { body readAt } } } }',
          { id, after: first.messages.pageInfo.endCursor },
        ),
      );
      expect(rest.messages.edges.map((e) => e.node.body.slice(0, 11))).toEqual(['hello human', 'yyyyyyyyyyy']);

      const marked = await mutate(
        'markMessagesRead',
        'MarkMessagesReadInput',
        { sandboxId: id },
        undefined,
        '... on MarkMessagesReadPayload { count }',
      );
      expect(marked).toMatchObject({ __typename: 'MarkMessagesReadPayload', count: 3 });
      const last = dataOf(
        await server.gql<{ sandbox: { lastMessage: { body: string; readAt: string | null } } }>(
          'query($id: ID!) { sandbox(id: $id) { lastMessage { body readAt } } }',
          { id },
        ),
      );
      expect(last.sandbox.lastMessage.body.startsWith('yyy')).toBe(true);
      expect(last.sandbox.lastMessage.readAt).not.toBeNull();

      const viewer = await server.apiToken(localId(tenantId), 'VIEWER', uniqueName('mv'));
      expect(await mutate('sendMessage', 'SendMessageInput', { sandboxId: id, body: 'no' }, viewer)).toMatchObject({
        __typename: 'ForbiddenError',
      });
    });
  });

  it('pages a tenant’s events by cursor, filtered by type', async () => {
    const tenantId = await createTenant(server, uniqueName('ev'));
    await registerWorker(server, uniqueName('evw'), { tenantId });
    const created = await createSandbox(server, tenantId);
    await server.gql('mutation($id: ID!) { sendMessage(input: { sandboxId: $id, body: "hi" }) { __typename } }', {
      id: created.sandbox.id,
    });
    type Events = {
      events: {
        totalCount: number;
        pageInfo: { hasNextPage: boolean; endCursor: string };
        edges: {
          cursor: string;
          node: {
            cursor: string;
            type: string;
            sandbox: { id: string } | null;
            worker: { id: string } | null;
            message: { body: string } | null;
            tenant: { id: string };
          };
        }[];
      };
    };
    const q =
      'query($t: ID!, $after: String, $types: [EventType!]) { events(tenantId: $t, first: 2, after: $after, types: $types) { totalCount pageInfo { hasNextPage endCursor } edges { cursor node { cursor type tenant { id } sandbox { id } worker { id } message { body } } } } }';
    const seen: string[] = [];
    let after: string | null = null;
    for (;;) {
      const page: Events = dataOf(await server.gql<Events>(q, { t: tenantId, after }));
      for (const e of page.events.edges) {
        expect(e.cursor).toBe(e.node.cursor);
        expect(e.node.tenant.id).toBe(tenantId);
        seen.push(e.node.type);
      }
      if (!page.events.pageInfo.hasNextPage) break;
      after = page.events.pageInfo.endCursor;
    }
    expect(seen).toEqual([
      'WORKER_STATUS_CHANGED',
      'SANDBOX_STATUS_CHANGED',
      'SANDBOX_STATUS_CHANGED',
      'SANDBOX_ASSIGNED',
      'MESSAGE_POSTED',
    ]);
    const messages = dataOf(await server.gql<Events>(q, { t: tenantId, types: ['MESSAGE_POSTED'] }));
    expect(messages.events.edges.map((e) => e.node)).toMatchObject([
      { type: 'MESSAGE_POSTED', sandbox: { id: created.sandbox.id }, message: { body: 'hi' } },
    ]);
    const bad = await server.gql(q, { t: tenantId, after: 'bm9wZQ' });
    expect(bad.body.errors?.[0].extensions?.code).toBe('INVALID_CURSOR');
    const stranger = await server.apiToken(
      localId(await createTenant(server, uniqueName('evs'))),
      'ADMIN',
      uniqueName('evs'),
    );
    expect((await server.gql(q, { t: tenantId }, stranger)).body.errors?.[0].extensions?.code).toBe('FORBIDDEN');
  });

  it('gates people’s mutations at the field, while a member’s refusal in a tenant stays the service’s, audited', async () => {
    const tenantId = await createTenant(server, uniqueName('gate'));
    const pool = uniqueName('pool');
    const worker = await registerWorker(server, uniqueName('gw'), { tenantId, labels: { pool } });
    const sandboxId = (await createSandbox(server, tenantId, { placement: { workerLabels: { pool } } })).sandbox.id;
    const memberId = (
      await mutate(
        'addMember',
        'AddMemberInput',
        { tenantId, subject: uniqueName('m'), role: 'VIEWER' },
        undefined,
        '... on AddMemberPayload { member { id } }',
      )
    ).member as { id: string };
    const calls: [string, string, Record<string, unknown>][] = [
      ['createTenant', 'CreateTenantInput', { slug: uniqueName('w'), name: 'w' }],
      ['stopSandbox', 'SandboxRefInput', { sandboxId }],
      ['deleteSandbox', 'SandboxRefInput', { sandboxId }],
      ['sendMessage', 'SendMessageInput', { sandboxId, body: 'hi' }],
      ['markMessagesRead', 'MarkMessagesReadInput', { sandboxId }],
      ['removeMember', 'RemoveMemberInput', { memberId: memberId.id }],
      ['createApiToken', 'CreateApiTokenInput', { tenantId, role: 'VIEWER', ttlSeconds: 3600 }],
      ['drainWorker', 'WorkerRefInput', { workerId: worker.id }],
      ['undrainWorker', 'WorkerRefInput', { workerId: worker.id }],
      ['rotateWorkerToken', 'WorkerRefInput', { workerId: worker.id }],
      ['deleteWorker', 'WorkerRefInput', { workerId: worker.id }],
    ];
    // A worker token can never pass these: the field's gate refuses it before any service runs.
    for (const [field, inputType, input] of calls) {
      expect(await mutate(field, inputType, input, worker.token), field).toMatchObject({
        __typename: 'ForbiddenError',
        code: 'FORBIDDEN',
      });
    }
    expect(await getSandbox(server, sandboxId)).toMatchObject({ status: 'SCHEDULED', stateVersion: 1 });
    expect(
      (await heartbeat(server, worker)).__typename,
      'the worker token still works: it was not rotated, the worker not deleted',
    ).toBe('WorkerPayload');

    // A VIEWER passes the gate (a member of some tenant); the service refuses it for this tenant and audits that.
    const viewerSubject = uniqueName('gv');
    const viewer = await server.apiToken(localId(tenantId), 'VIEWER', viewerSubject);
    expect(await mutate('stopSandbox', 'SandboxRefInput', { sandboxId }, viewer)).toMatchObject({
      __typename: 'ForbiddenError',
      message: 'stopSandbox needs the OPERATOR role in the tenant',
    });
    const [entry] = await server.app.db.orm.em
      .fork()
      .find(AuditEntry, { action: 'stopSandbox', targetId: localId(sandboxId) }, { orderBy: { id: 'desc' }, limit: 1 });
    expect(entry).toMatchObject({ outcome: 'FORBIDDEN', actor: viewerSubject });
  });

  it('writes an audit entry for every mutation, refused ones included', async () => {
    const before = await server.app.db.orm.em.fork().count(AuditEntry, {});
    const tenantId = await createTenant(server, uniqueName('aud'));
    await createSandbox(server, tenantId, { name: '' });
    const entries = await server.app.db.orm.em.fork().find(AuditEntry, {}, { orderBy: { id: 'desc' }, limit: 2 });
    expect(await server.app.db.orm.em.fork().count(AuditEntry, {})).toBe(before + 2);
    expect(entries.map((e) => `${e.action}:${e.outcome}`)).toEqual([
      'createSandbox:VALIDATION_FAILED',
      'createTenant:ok',
    ]);
  });
});
