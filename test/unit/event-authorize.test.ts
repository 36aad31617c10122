import { describe, expect, it } from 'vitest';
import type { Identity } from '../../src/auth/identity.js';
import { eventVisibleTo, principalOf } from '../../src/events/authorize.js';
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
    expect(
      principalOf(identity({ subject: 'oidc|alice', tokenId: 'j1', tenantRoles: new Map([['t1', 'ADMIN']]) })),
    ).toEqual({
      subject: 'oidc|alice',
      tokenId: 'j1',
      tenantIds: ['t1'],
    });
  });
});
