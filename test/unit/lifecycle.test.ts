import { describe, expect, it } from 'vitest';
import { SANDBOX_STATUSES } from '../../src/db/entities/sandbox.js';
import { InvalidTransitionError } from '../../src/domain/errors.js';
import { assertTransition, canTransition, reservesCapacity } from '../../src/domain/lifecycle.js';
import { imageMatches } from '../../src/domain/sandboxes.js';

describe('sandbox state machine', () => {
  it('follows the happy path and nothing backwards', () => {
    const path = ['PENDING', 'SCHEDULED', 'STARTING', 'RUNNING', 'STOPPING', 'STOPPED'] as const;
    for (let i = 0; i + 1 < path.length; i++) {
      expect(canTransition(path[i], path[i + 1])).toBe(true);
      expect(canTransition(path[i + 1], path[i])).toBe(false);
    }
  });

  it('reaches FAILED and LOST from the active states only', () => {
    for (const from of ['SCHEDULED', 'STARTING', 'RUNNING', 'STOPPING'] as const) {
      expect(canTransition(from, 'FAILED')).toBe(true);
      // A plain stop ends STOPPED even when its worker goes away; a restart (it runs on) is LOST.
      expect(canTransition(from, 'LOST', { restarting: from === 'STOPPING' })).toBe(true);
    }
    expect(canTransition('STOPPING', 'LOST')).toBe(false);
    for (const from of ['STOPPED', 'FAILED', 'DELETED'] as const) {
      expect(canTransition(from, 'LOST')).toBe(false);
      expect(canTransition(from, 'RUNNING')).toBe(false);
    }
    expect(canTransition('PENDING', 'LOST')).toBe(false);
    expect(canTransition('LOST', 'SCHEDULED')).toBe(true);
  });

  it('deletes from anywhere but DELETED, and leaves DELETED for nothing', () => {
    for (const from of SANDBOX_STATUSES) expect(canTransition(from, 'DELETED')).toBe(from !== 'DELETED');
    for (const to of SANDBOX_STATUSES) expect(canTransition('DELETED', to)).toBe(false);
  });

  it('goes from STOPPING back to STARTING (or LOST) only for a restart', () => {
    expect(canTransition('STOPPING', 'STARTING')).toBe(false);
    expect(canTransition('STOPPING', 'STARTING', { restarting: false })).toBe(false);
    expect(canTransition('STOPPING', 'STARTING', { restarting: true })).toBe(true);
    expect(() => assertTransition('STOPPING', 'STARTING')).toThrow(InvalidTransitionError);
    // The flag opens those two edges, nothing else.
    for (const from of SANDBOX_STATUSES)
      for (const to of SANDBOX_STATUSES)
        if (from !== 'STOPPING' || (to !== 'STARTING' && to !== 'LOST'))
          expect(canTransition(from, to, { restarting: true })).toBe(canTransition(from, to));
    // A restart, and the stop, loss or delete that may end it.
    for (const to of ['STOPPED', 'FAILED', 'LOST', 'DELETED'] as const)
      expect(canTransition('STOPPING', to, { restarting: true })).toBe(true);
  });

  it('keeps capacity reserved while STOPPING for a restart, not for a plain stop', () => {
    expect(reservesCapacity('RUNNING')).toBe(true);
    expect(reservesCapacity('STOPPING')).toBe(false);
    expect(reservesCapacity('STOPPING', { restarting: true })).toBe(true);
    for (const status of ['STOPPED', 'FAILED', 'LOST', 'DELETED', 'PENDING'] as const)
      expect(reservesCapacity(status, { restarting: true })).toBe(false);
  });

  it('names both ends of a refused transition', () => {
    expect(() => assertTransition('STOPPED', 'RUNNING')).toThrow(InvalidTransitionError);
    try {
      assertTransition('STOPPED', 'RUNNING');
    } catch (err) {
      expect(err).toMatchObject({ code: 'INVALID_TRANSITION', from: 'STOPPED', to: 'RUNNING' });
    }
  });
});

describe('image globs', () => {
  it('matches * and ? and nothing else as wildcards', () => {
    expect(imageMatches('ghcr.io/acme/agent:1', 'ghcr.io/acme/*')).toBe(true);
    expect(imageMatches('ghcr.io/acme/agent:1', 'ghcr.io/acme/agent:?')).toBe(true);
    expect(imageMatches('ghcr.io/acme/agent:12', 'ghcr.io/acme/agent:?')).toBe(false);
    expect(imageMatches('ghcrXio/acme/agent', 'ghcr.io/acme/*')).toBe(false);
    expect(imageMatches('docker.io/ghcr.io/acme/x', 'ghcr.io/acme/*')).toBe(false);
    expect(imageMatches('ghcr.io/acme/(a)+', 'ghcr.io/acme/(a)+')).toBe(true);
  });
});
