import type { EventSubscription } from '../src/events/hub.js';
import type { LogEvent } from '../src/events/reader.js';
import type { Context } from './builder.js';

/**
 * Adapts a hub stream to a subscription resolver. The hub subscription is opened here, at
 * subscribe time (not at the first read), so nothing committed after the subscribe call is
 * missed and refusals (not found, forbidden, bad cursor) answer the subscribe request itself.
 * Each event starts a fresh context (current rows, empty DataLoaders); the stream closes with
 * the subscription.
 */
export async function eventStream(
  ctx: Context,
  open: () => Promise<EventSubscription>,
): Promise<AsyncIterable<LogEvent>> {
  const stream = await open();
  return (async function* renewing(): AsyncGenerator<LogEvent> {
    try {
      for await (const event of stream) {
        ctx.renew();
        yield event;
      }
    } finally {
      await stream.return?.();
    }
  })();
}
