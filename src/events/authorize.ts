import { hasTenantRole, type Identity } from '../auth/identity.js';
import type { SubscriberPrincipal } from './hub.js';
import type { LogEvent } from './reader.js';

/**
 * The default per-event authorization for a subscription: platform admins see everything; a
 * tenant member (any role) sees the tenant's events; a worker token sees the events about its own
 * worker (its assignments and stop requests). Anything else is hidden, including events with no
 * tenant and no worker. Subscription fields may narrow this further, never widen it.
 */
export function eventVisibleTo(identity: Identity): (event: LogEvent) => boolean {
  return (event) => {
    if (identity.platformAdmin) return true;
    if (event.tenantId !== null && hasTenantRole(identity, event.tenantId, 'VIEWER')) return true;
    return identity.workerId !== null && event.workerId === identity.workerId;
  };
}

/** Who holds a subscription, so `EventHub.endWhere` can end it when the token or a membership goes. */
export function principalOf(identity: Identity): SubscriberPrincipal {
  return { subject: identity.subject, tokenId: identity.tokenId, tenantIds: [...identity.tenantRoles.keys()] };
}
