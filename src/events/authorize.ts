import { hasTenantRole, type Identity, withMembershipLowered } from '../auth/identity.js';
import type { TenantRole } from '../db/entities/member.js';
import type { SubscriberPrincipal } from './hub.js';
import type { LogEvent } from './reader.js';

/**
 * The default per-event authorization for a subscription: platform admins see everything; a
 * tenant member (any role) sees the tenant's events; a worker token sees the events about its own
 * worker (its assignments and stop requests). Anything else is hidden, including events with no
 * tenant and no worker. Subscription fields may narrow this further, never widen it.
 */
export function eventVisibleTo(identity: Identity): (event: LogEvent) => boolean {
  return (event) => isEventVisibleTo(identity, event);
}

function isEventVisibleTo(identity: Identity, event: LogEvent): boolean {
  if (identity.platformAdmin) return true;
  if (event.tenantId !== null && hasTenantRole(identity, event.tenantId, 'VIEWER')) return true;
  return identity.workerId !== null && event.workerId === identity.workerId;
}

/** The tenant whose data a stream follows, and the role it needs there to go on. */
export interface StreamTarget {
  tenantId: string;
  role: TenantRole;
}

/**
 * Who holds one subscription and with what access, for its whole life: the hub ends it when its
 * token is revoked or the subject loses the role its target needs, and otherwise narrows it when
 * the subject loses a role elsewhere. `identity` is what the stream authorizes its events and
 * executes its selection with from then on (a new object each time: identities are shared).
 */
export class StreamAccess implements SubscriberPrincipal {
  private current: Identity;

  constructor(
    identity: Identity,
    /** Null: the stream follows no one tenant's data (a worker's own queue, a platform admin's worker). */
    readonly target: StreamTarget | null,
  ) {
    this.current = identity;
  }

  get identity(): Identity {
    return this.current;
  }
  get subject(): string {
    return this.current.subject;
  }
  get tokenId(): string {
    return this.current.tokenId;
  }
  get tenantIds(): readonly string[] {
    return [...this.current.tenantRoles.keys()];
  }

  /** Whether the stream's holder may see this event now. */
  sees(event: LogEvent): boolean {
    return isEventVisibleTo(this.current, event);
  }

  membershipChanged(tenantId: string, role: TenantRole | null): boolean {
    const next = withMembershipLowered(this.current, tenantId, role);
    if (next === this.current) return true;
    this.current = next;
    return this.target === null || hasTenantRole(next, this.target.tenantId, this.target.role);
  }
}
