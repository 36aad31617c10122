import type { TokenAuthority } from '../auth/authority.js';
import type { Identity } from '../auth/identity.js';
import type { SecretKeyring } from '../auth/secret-keys.js';
import type { Em } from '../db/orm.js';
import type { EventBus } from '../events/bus.js';
import type { EventHub } from '../events/hub.js';

import type { Clock } from '../kernel/clock.js';
import type { Logger } from '../kernel/logger.js';
import type { SharedReads } from './shared-reads.js';
import type { SweepSignals } from './sweep-signals.js';

// Kept here too: services and resolvers know the clock as part of their context.
export { type Clock, systemClock } from '../kernel/clock.js';

/** Settings the services read (a slice of the config). */
export interface DomainSettings {
  heartbeatTtlSeconds: number;
  /** How many ports one sandbox may ask for (DEFAULT_MAX_PORTS_PER_SANDBOX when absent). */
  maxPortsPerSandbox?: number;
  /** How long a DISPATCHED message may wait for its DELIVERED (DEFAULT_MESSAGE_DISPATCH_TIMEOUT_SECONDS when absent). */
  messageDispatchTimeoutSeconds?: number;
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
  /** Shared execution of live subscriptions: rows by id read once per event batch for every caller. */
  sharedReads?: SharedReads;
  /** This process's domain sweeper, told after commit what may let it place or sweep (sweep-signals.ts). */
  sweep?: SweepSignals;
  /** The keys secrets are encrypted with at rest; absent where no server runs (secret writes and reads refuse as unavailable). */
  secrets?: SecretKeyring;
  /** Where services log what they swallow (a refused attempt they could not audit). */
  logger?: Logger;
  /** Aborted when this server stops taking work: long waits answer at once instead of holding the shutdown. */
  stopping?: AbortSignal;
}
