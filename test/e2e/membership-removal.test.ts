import { SignJWT } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DRIVERS } from '../helpers/databases.js';
import { createSandbox, createTenant, dataOf, registerWorker, uniqueName } from '../helpers/fleet.js';
import { startTestServer, type TestServer } from '../helpers/server.js';

/**
 * Removing a member ends exactly the streams that lost access: the subject's streams of that
 * tenant (and a tenant-agnostic stream at its next event of that tenant), never its streams of
 * the tenants it still belongs to.
 */
const ISSUER = 'https://sso.membership.invalid';
const SECRET = 'membership-test-shared-secret-of-enough-bytes!';
const AUDIENCE = 'flotilla-membership';
const WAIT_MS = 15_000;

const TENANT_EVENTS = 'subscription($t: ID!) { tenantEvents(tenantId: $t) { type } }';
const SANDBOX_EVENTS = 'subscription($s: ID!) { sandboxEvents(sandboxId: $s) { type } }';

interface Watch {
  types: string[];
  ended: Promise<string>;
  dispose(): void;
}

function watch(server: TestServer, token: string, query: string, variables: Record<string, unknown>): Watch {
  const types: string[] = [];
  let end: (how: string) => void = () => undefined;
  const ended = new Promise<string>((r) => {
    end = r;
  });
  const dispose = server.ws(token).subscribe(
    { query, variables },
    {
      next: (value) => {
        const data = value.data as Record<string, { type: string }> | undefined;
        if (data) types.push(Object.values(data)[0].type);
        const code = (value.errors?.[0] as { extensions?: { code?: string } } | undefined)?.extensions?.code;
        if (code) end(code);
      },
      error: (err) => end((err as { extensions?: { code?: string } }[])?.[0]?.extensions?.code ?? 'error'),
      complete: () => end('complete'),
    },
  );
  return { types, ended, dispose };
}

const within = <T>(promise: Promise<T>) =>
  Promise.race([promise, new Promise<'still open'>((r) => setTimeout(() => r('still open'), WAIT_MS))]);

describe.each(DRIVERS)('removing a member on %s', (kind) => {
  let server: TestServer;

  beforeAll(async () => {
    server = await startTestServer(kind, {
      env: { FLOTILLA_HS256_ISSUERS: JSON.stringify([{ issuer: ISSUER, audience: AUDIENCE, secret: SECRET }]) },
    });
  });
  afterAll(async () => {
    await server?.close();
  });

  it('ends only the streams that depended on that membership', async () => {
    const quota = { maxSandboxes: 10, maxCpuMillis: 100_000, maxMemoryMb: 100_000 };
    const left = await createTenant(server, uniqueName('left'), { quota });
    const kept = await createTenant(server, uniqueName('kept'), { quota });
    await registerWorker(server, uniqueName('w'));
    const subject = `sso:${uniqueName('bob')}`;
    const memberIds: Record<string, string> = {};
    for (const tenantId of [left, kept]) {
      const res = await server.gql<{ addMember: { member: { id: string } } }>(
        'mutation($i: AddMemberInput!) { addMember(input: $i) { ... on AddMemberPayload { member { id } } } }',
        { i: { tenantId, subject, role: 'VIEWER' } },
      );
      memberIds[tenantId] = dataOf(res).addMember.member.id;
    }
    const sandboxOfLeft = (await createSandbox(server, left, { name: 'in-left' })).sandbox.id;
    const token = await new SignJWT({})
      .setProtectedHeader({ alg: 'HS256' })
      .setIssuer(ISSUER)
      .setAudience(AUDIENCE)
      .setSubject(subject)
      .setIssuedAt()
      .setExpirationTime('10m')
      .sign(new TextEncoder().encode(SECRET));

    const ofLeft = watch(server, token, TENANT_EVENTS, { t: left });
    const ofKept = watch(server, token, TENANT_EVENTS, { t: kept });
    const ofSandbox = watch(server, token, SANDBOX_EVENTS, { s: sandboxOfLeft });
    const deadline = Date.now() + WAIT_MS;
    while (server.app.events().subscriberCount < 3 && Date.now() < deadline)
      await new Promise((r) => setTimeout(r, 20));
    expect(server.app.events().subscriberCount).toBe(3);

    const removed = await server.gql<{ removeMember: { __typename: string } }>(
      'mutation($i: RemoveMemberInput!) { removeMember(input: $i) { __typename } }',
      { i: { memberId: memberIds[left] } },
    );
    expect(dataOf(removed).removeMember.__typename).not.toMatch(/Error$/);
    // The stream of the tenant left ends; so does the sandbox stream of that tenant, at its next event.
    expect(await within(ofLeft.ended)).toBe('SUBSCRIPTION_ENDED');
    await createSandbox(server, left, { name: 'after-removal' });
    await server.gql('mutation($i: SendMessageInput!) { sendMessage(input: $i) { __typename } }', {
      i: { sandboxId: sandboxOfLeft, body: 'anyone there?' },
    });
    expect(await within(ofSandbox.ended)).toBe('SUBSCRIPTION_ENDED');
    expect(ofSandbox.types).not.toContain('MESSAGE_POSTED');
    // The stream of the tenant still joined goes on and sees what happens there.
    await createSandbox(server, kept, { name: 'still-seen' });
    const seenBy = Date.now() + WAIT_MS;
    while (!ofKept.types.includes('SANDBOX_STATUS_CHANGED') && Date.now() < seenBy)
      await new Promise((r) => setTimeout(r, 20));
    expect(ofKept.types).toContain('SANDBOX_STATUS_CHANGED');
    expect(await Promise.race([ofKept.ended, Promise.resolve('open')])).toBe('open');
    for (const w of [ofLeft, ofKept, ofSandbox]) w.dispose();
  });
});
