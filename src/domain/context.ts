import type { TokenAuthority } from '../auth/authority.js';
import type { Identity } from '../auth/identity.js';
import type { Em } from '../db/orm.js';
import type { EventBus } from '../events/bus.js';
import type { EventHub } from '../events/hub.js';

export interface Clock {
  now(): Date;
}

export const systemClock: Clock = { now: () => new Date() };

/** Settings the services read (a slice of the config). */
export interface DomainSettings {
  heartbeatTtlSeconds: number;
}

/** What every service of one request shares: its own EntityManager fork and the caller. */
export interface ServiceContext {
  em: Em;
  identity: Identity;
  clock: Clock;
  settings: DomainSettings;
  /** Told after every committed write, so the subscription hub reads the new events. */
  bus: EventBus;
  /** Mints and ends tokens; absent where no server runs (services needing it refuse as unavailable). */
  tokens?: TokenAuthority;
  /** This process's subscription hub; null until the event stream is running. */
  events?: () => EventHub | null;
}
