import type { EventSubscription } from '../src/events/hub.js';
import type { LogEvent } from '../src/events/reader.js';
import type { Context } from './builder.js';

/**
 * Adapts a hub stream to a subscription resolver. The hub subscription is opened here, at
 * subscribe time (not at the first read), so nothing committed after the subscribe call is
 * missed and refusals (not found, forbidden, bad cursor) answer the subscribe request itself.
 * Each event starts a fresh context (current rows, empty DataLoaders) for a subscriber that
 * executes alone, acting as the identity the stream holds now (an access change may have narrowed
 * it); `return()` ends the hub subscription at once, even while waiting for an event.
 */
export async function eventStream(
  ctx: Context,
  open: () => Promise<EventSubscription>,
): Promise<AsyncIterableIterator<LogEvent>> {
  const stream = await open();
  // What subscribing loaded (an EntityManager fork, DataLoaders) is not needed while waiting for events.
  ctx.renew();
  const renewing: AsyncIterableIterator<LogEvent> = {
    [Symbol.asyncIterator]: () => renewing,
    next: async () => {
      const step = await stream.next();
      // An access change may have narrowed the stream's identity since the last event: execute with that.
      if (!step.done) ctx.renew(stream.principal?.identity);
      return step;
    },
    return: async () => (await stream.return?.()) ?? { done: true, value: undefined },
    throw: async (error: unknown) => {
      await stream.return?.();
      throw error;
    },
  };
  return renewing;
}
