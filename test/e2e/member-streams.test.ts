import type { Client } from 'graphql-ws';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { DatabaseKind } from '../../src/config/index.js';
import { DRIVERS } from '../helpers/databases.js';
import { createSandbox, createTenant, dataOf, registerWorker, uniqueName } from '../helpers/fleet.js';
import { type Hs256Issuer, personToken } from '../helpers/replica.js';
import { startTestServer, subscribersReach, type TestServer } from '../helpers/server.js';

/**
 * Removing a member from a tenant (or lowering its role) ends only the streams that lost access
 * (the ones following that tenant's data).
 * The member's other streams go on, but from then on act as the narrowed identity: a selection
 * that reaches across tenants (a shared worker's sandboxes) no longer shows the tenant it lost,
 * whether subscribers share executions or each executes alone.
 */
const SSO: Hs256Issuer = {
  issuer: 'https://sso.member-streams.invalid',
  audience: 'flotilla-member-streams',
  secret: 'member-streams-test-shared-secret-long-enough',
};
const ISSUERS = JSON.stringify([SSO]);
const DELIVERY_TIMEOUT_MS = 20_000;

/** A tenant's new sandboxes, with every sandbox the caller can see on the (shared) worker each was placed on. */
const ACROSS = `subscription($t: ID!) { tenantEvents(tenantId: $t, types: [SANDBOX_ASSIGNED]) {
  type sandbox { name worker { sandboxes(first: 50) { edges { node { name } } } } }
} }`;
/** A tenant's new sandboxes, with its audit trail (ADMIN only). */
const AUDITED = `subscription($t: ID!) { tenantEvents(tenantId: $t, types: [SANDBOX_ASSIGNED]) {
  type tenant { auditEntries(first: 1) { edges { cursor } } }
} }`;
const EVERYTHING = 'subscription($t: ID!) { tenantEvents(tenantId: $t) { type } }';
const SANDBOX = 'subscription($s: ID!) { sandboxEvents(sandboxId: $s) { type } }';

interface Result {
  data?: { tenantEvents: Record<string, unknown> } | null;
  errors?: readonly { message: string; extensions?: { code?: string } }[];
}

interface Collector {
  results: Result[];
  /** Resolves once `count` results arrived, or with what arrived when the stream ended or time ran out. */
  until(count: number): Promise<Result[]>;
  /** How the stream ended: its error's message and code, or 'complete'. */
  ended: Promise<{ message: string; code?: string } | 'complete'>;
}

function collect(client: Client, query: string, variables: Record<string, unknown>): Collector {
  const results: Result[] = [];
  let wake: () => void = () => undefined;
  let end: (how: { message: string; code?: string } | 'complete') => void = () => undefined;
  let over = false;
  const ended = new Promise<{ message: string; code?: string } | 'complete'>((resolve) => {
    end = (how) => {
      over = true;
      resolve(how);
      wake();
    };
  });
  client.subscribe(
    { query, variables },
    {
      next: (value) => {
        const result = value as Result;
        // A stream the server ends carries the reason as its last result's error.
        const error = result.errors?.[0];
        if (error?.extensions?.code === 'SUBSCRIPTION_ENDED')
          end({ message: error.message, code: 'SUBSCRIPTION_ENDED' });
        else results.push(result);
        wake();
      },
      error: (err) => {
        const first = Array.isArray(err) ? (err[0] as { message: string; extensions?: { code?: string } }) : null;
        end(first ? { message: first.message, code: first.extensions?.code } : { message: String(err) });
      },
      complete: () => end('complete'),
    },
  );
  return {
    results,
    ended,
    async until(count) {
      const deadline = Date.now() + DELIVERY_TIMEOUT_MS;
      while (results.length < count && !over && Date.now() < deadline) {
        await Promise.race([new Promise<void>((r) => (wake = r)), new Promise((r) => setTimeout(r, 100))]);
      }
      return results;
    },
  };
}

async function liveGroups(server: TestServer): Promise<number> {
  const text = await (await fetch(`${server.app.url}/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith('flotilla_live_groups '));
  return Number(line?.split(' ')[1] ?? Number.NaN);
}

/** The names of the sandboxes a result shows on the new sandbox's worker. */
function namesOnWorker(result: Result | undefined): string[] {
  const sandbox = result?.data?.tenantEvents.sandbox as
    | { worker: { sandboxes: { edges: { node: { name: string } }[] } } | null }
    | undefined;
  return (sandbox?.worker?.sandboxes.edges ?? []).map((e) => e.node.name).sort();
}

const MODES = DRIVERS.flatMap((kind) => [
  { kind, shared: true },
  { kind, shared: false },
]) as { kind: DatabaseKind; shared: boolean }[];

describe.each(MODES)(
  'a member’s streams after a membership change on $kind (shared execution: $shared)',
  ({ kind, shared }) => {
    let server: TestServer;
    const quota = { maxSandboxes: 50, maxCpuMillis: 1_000_000, maxMemoryMb: 1_000_000 };

    beforeAll(async () => {
      server = await startTestServer(kind, {
        env: { FLOTILLA_HS256_ISSUERS: ISSUERS, FLOTILLA_SHARED_SUBSCRIPTION_EXECUTION: String(shared) },
      });
      // One shared worker: every tenant's sandboxes are placed on it.
      await registerWorker(server, uniqueName('shared'), { cpuMillis: 1_000_000, memoryMb: 1_000_000 });
    });
    afterAll(async () => {
      await server?.close();
    });

    async function addMember(tenantId: string, subject: string, role: string): Promise<string> {
      const res = await server.gql<{ addMember: { member: { id: string } } }>(
        'mutation($i: AddMemberInput!) { addMember(input: $i) { ... on AddMemberPayload { member { id } } } }',
        { i: { tenantId, subject, role } },
      );
      return dataOf(res).addMember.member.id;
    }

    async function removeMember(memberId: string): Promise<void> {
      const res = await server.gql<{ removeMember: { __typename: string } }>(
        'mutation($i: RemoveMemberInput!) { removeMember(input: $i) { __typename } }',
        { i: { memberId } },
      );
      expect(dataOf(res).removeMember.__typename).toBe('RemoveMemberPayload');
    }

    async function sandbox(tenantId: string, name: string): Promise<string> {
      const created = await createSandbox(server, tenantId, { name });
      expect(created.__typename, JSON.stringify(created)).toBe('SandboxPayload');
      return created.sandbox.id;
    }

    it('ends only the removed tenant’s stream; the other goes on without reaching that tenant’s data', async () => {
      const a = await createTenant(server, uniqueName('a'), { quota });
      const b = await createTenant(server, uniqueName('b'), { quota });
      const alice = uniqueName('sso:alice');
      const inA = await addMember(a, alice, 'VIEWER');
      await addMember(b, alice, 'VIEWER');
      // Bob holds B only, with the same role: after the removal alice's B stream has his access.
      const bob = uniqueName('sso:bob');
      await addMember(b, bob, 'VIEWER');
      const a1 = await sandbox(a, 'a-1');

      const asAlice = server.ws(await personToken(SSO, alice));
      const asBob = server.ws(await personToken(SSO, bob));
      const base = server.app.events().subscriberCount;
      const groupsBefore = await liveGroups(server);
      const ofA = collect(asAlice, EVERYTHING, { t: a });
      const ofA1 = collect(asAlice, SANDBOX, { s: a1 });
      const ofB = collect(asAlice, ACROSS, { t: b });
      const bobsB = collect(asBob, ACROSS, { t: b });
      await subscribersReach(server, base + 4);

      await sandbox(b, 'b-1');
      const [before] = await ofB.until(1);
      // Through the shared worker, alice's B stream sees A's sandbox while she is a member of A.
      expect(namesOnWorker(before)).toEqual(['a-1', 'b-1']);
      expect(namesOnWorker((await bobsB.until(1))[0])).toEqual(['b-1']);

      await removeMember(inA);
      // Her streams of A's data end, a tenant's and a sandbox's alike.
      for (const stream of [ofA, ofA1]) {
        expect(await stream.ended).toEqual({
          message: expect.stringMatching(/membership of a tenant was removed/),
          code: 'SUBSCRIPTION_ENDED',
        });
      }
      await subscribersReach(server, base + 2);

      await sandbox(b, 'b-2');
      const after = await ofB.until(2);
      expect(after).toHaveLength(2);
      expect(after[1].errors).toBeUndefined();
      expect(namesOnWorker(after[1])).toEqual(['b-1', 'b-2']);
      expect(namesOnWorker((await bobsB.until(2))[1])).toEqual(['b-1', 'b-2']);
      // Executing together, her B stream moved into the group of her new access, which is bob's.
      if (shared) expect(await liveGroups(server)).toBe(groupsBefore + 1);

      // A's sandboxes stay out of her B stream, which is still open.
      await sandbox(a, 'a-2');
      await sandbox(b, 'b-3');
      expect(namesOnWorker((await ofB.until(3))[2])).toEqual(['b-1', 'b-2', 'b-3']);
      await Promise.all([asAlice.dispose(), asBob.dispose()]);
    });

    it('keeps a stream whose role was lowered to one it still needs, acting as the lower role', async () => {
      const a = await createTenant(server, uniqueName('a'), { quota });
      const b = await createTenant(server, uniqueName('b'), { quota });
      const carol = uniqueName('sso:carol');
      await addMember(a, carol, 'ADMIN');
      await addMember(b, carol, 'VIEWER');
      const asCarol = server.ws(await personToken(SSO, carol));
      const base = server.app.events().subscriberCount;
      const ofA = collect(asCarol, AUDITED, { t: a });
      const ofB = collect(asCarol, ACROSS, { t: b });
      await subscribersReach(server, base + 2);

      await sandbox(a, 'a-1');
      const [asAdmin] = await ofA.until(1);
      expect(asAdmin.errors).toBeUndefined();
      expect(asAdmin.data?.tenantEvents.tenant).toMatchObject({
        auditEntries: { edges: [{ cursor: expect.any(String) }] },
      });

      // ADMIN → VIEWER in A: both streams still have what they follow.
      await addMember(a, carol, 'VIEWER');
      await sandbox(a, 'a-2');
      const [, asViewer] = await ofA.until(2);
      expect(asViewer?.errors?.map((e) => e.extensions?.code)).toEqual(['FORBIDDEN']);
      expect(asViewer?.data?.tenantEvents.type).toBe('SANDBOX_ASSIGNED');

      await sandbox(b, 'b-1');
      // Her B stream still sees A's sandboxes through the shared worker: she is still a viewer of A.
      expect(namesOnWorker((await ofB.until(1))[0])).toEqual(['a-1', 'a-2', 'b-1']);
      expect(server.app.events().subscriberCount).toBe(base + 2);
      await asCarol.dispose();
    });
  },
);
