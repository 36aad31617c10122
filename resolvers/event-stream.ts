import type { EventSubscription } from '../src/events/hub.js';
import type { LogEvent } from '../src/events/reader.js';
import type { Context } from './builder.js';

/**
 * Adapts a hub stream to a subscription resolver: each event starts a fresh context (current
 * rows, empty DataLoaders), and the stream closes with the subscription.
 */
export async function* eventStream(ctx: Context, open: () => Promise<EventSubscription>): AsyncGenerator<LogEvent> {
  const stream = await open();
  try {
    for await (const event of stream) {
      ctx.renew();
      yield event;
    }
  } finally {
    await stream.return?.();
  }
}
