import { describe, expect, it } from 'vitest';
import { type Identity, withMembershipLowered } from '../../src/auth/identity.js';
import { eventVisibleTo, StreamAccess } from '../../src/events/authorize.js';
import { encodeEventCursor, type LogEvent } from '../../src/events/reader.js';

const identity = (over: Partial<Identity>): Identity => ({
  subject: 'someone',
  tokenId: 'jti',
  source: 'API',
  platformAdmin: false,
  tenantRoles: new Map(),
  workerId: null,
  scopes: new Set(),
  expiresAt: null,
  ...over,
});

const event = (over: Partial<LogEvent>): LogEvent => ({
  id: '1',
  position: 1n,
  cursor: encodeEventCursor(1n),
  type: 'SANDBOX_ASSIGNED',
  tenantId: null,
  sandboxId: null,
  workerId: null,
  messageId: null,
  leaseId: null,
  data: {},
  createdAt: new Date(0),
  ...over,
});

describe('event authorization', () => {
  it('shows members their tenants, workers their own work, admins everything, and hides the rest', () => {
    const member = eventVisibleTo(identity({ tenantRoles: new Map([['t1', 'VIEWER']]) }));
    expect(member(event({ tenantId: 't1' }))).toBe(true);
    expect(member(event({ tenantId: 't2' }))).toBe(false);
    expect(member(event({ workerId: 'w1' }))).toBe(false);

    const worker = eventVisibleTo(identity({ source: 'WORKER', workerId: 'w1' }));
    expect(worker(event({ tenantId: 't1', workerId: 'w1' }))).toBe(true);
    expect(worker(event({ tenantId: 't1', workerId: 'w2' }))).toBe(false);
    expect(worker(event({ tenantId: 't1' }))).toBe(false);

    const admin = eventVisibleTo(identity({ platformAdmin: true }));
    expect(admin(event({}))).toBe(true);
  });

  it('describes the holder of a subscription for ending it later', () => {
    const access = new StreamAccess(
      identity({ subject: 'oidc|alice', tokenId: 'j1', tenantRoles: new Map([['t1', 'ADMIN']]) }),
      { tenantId: 't1', role: 'VIEWER' },
    );
    expect({ subject: access.subject, tokenId: access.tokenId, tenantIds: access.tenantIds }).toEqual({
      subject: 'oidc|alice',
      tokenId: 'j1',
      tenantIds: ['t1'],
    });
  });

  it('narrows a stream whose subject lost a role elsewhere, and ends it when it lost what it follows', () => {
    const alice = identity({
      source: 'HS256',
      subject: 'sso:alice',
      tenantRoles: new Map([
        ['a', 'ADMIN'],
        ['b', 'VIEWER'],
      ]),
    });
    const ofB = new StreamAccess(alice, { tenantId: 'b', role: 'VIEWER' });
    expect(ofB.sees(event({ tenantId: 'a' }))).toBe(true);
    expect(ofB.membershipChanged('a', null)).toBe(true);
    expect(ofB.identity).not.toBe(alice);
    expect([...ofB.identity.tenantRoles]).toEqual([['b', 'VIEWER']]);
    expect(ofB.sees(event({ tenantId: 'a' }))).toBe(false);
    expect(ofB.sees(event({ tenantId: 'b' }))).toBe(true);
    // The shared identity itself is never changed.
    expect(alice.tenantRoles.get('a')).toBe('ADMIN');

    const ofA = new StreamAccess(alice, { tenantId: 'a', role: 'VIEWER' });
    expect(ofA.membershipChanged('a', 'VIEWER')).toBe(true);
    expect(ofA.identity.tenantRoles.get('a')).toBe('VIEWER');
    expect(ofA.membershipChanged('a', null)).toBe(false);

    const adminOfA = new StreamAccess(alice, { tenantId: 'a', role: 'ADMIN' });
    expect(adminOfA.membershipChanged('a', 'OPERATOR')).toBe(false);
  });

  it('leaves platform admins, token-granted roles and claimed group roles to what the token says', () => {
    const apiToken = identity({ source: 'API', tenantRoles: new Map([['a', 'ADMIN']]) });
    expect(withMembershipLowered(apiToken, 'a', null)).toBe(apiToken);
    const admin = identity({ source: 'ADMIN', platformAdmin: true, tenantRoles: new Map([['a', 'ADMIN']]) });
    expect(withMembershipLowered(admin, 'a', null)).toBe(admin);

    const grouped = identity({
      source: 'OIDC',
      tenantRoles: new Map([['a', 'ADMIN']]),
      claimedRoles: new Map([['a', 'OPERATOR']]),
    });
    expect(withMembershipLowered(grouped, 'a', null).tenantRoles.get('a')).toBe('OPERATOR');
    expect(withMembershipLowered(grouped, 'a', 'VIEWER').tenantRoles.get('a')).toBe('OPERATOR');

    // A change never raises what an open stream holds, and one that takes nothing returns the same identity.
    const viewer = identity({ source: 'HS256', tenantRoles: new Map([['a', 'VIEWER']]) });
    expect(withMembershipLowered(viewer, 'a', 'OPERATOR')).toBe(viewer);
    expect(withMembershipLowered(viewer, 'b', null)).toBe(viewer);
  });
});
