import type { Orm } from '../../src/db/orm.js';
import type { EventBus } from '../../src/events/bus.js';
import type { EventSubscription } from '../../src/events/hub.js';
import { appendEvent, type NewEvent } from '../../src/events/log.js';
import type { LogEvent } from '../../src/events/reader.js';

/** Appends events in one transaction the way services do, then wakes the bus after commit. */
export async function appendCommitted(
  orm: Orm,
  bus: EventBus | null,
  events: NewEvent[],
  now = new Date(),
): Promise<string[]> {
  const ids = await orm.em.fork().transactional(async (tx) => {
    const out: string[] = [];
    for (const event of events) out.push((await appendEvent(tx, event, now)).id);
    return out;
  });
  bus?.committed();
  return ids.map(String);
}

/** Reads `count` events from a subscription, failing after `timeoutMs` with what it got so far. */
export async function take(sub: EventSubscription, count: number, timeoutMs = 20_000): Promise<LogEvent[]> {
  const got: LogEvent[] = [];
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${got.length} of ${count} events`)), timeoutMs);
  });
  try {
    while (got.length < count) {
      const next = await Promise.race([sub.next(), timeout]);
      if (next.done) throw new Error(`stream ended after ${got.length} of ${count} events`);
      got.push(next.value);
    }
    return got;
  } finally {
    clearTimeout(timer);
  }
}

export function ids(events: readonly LogEvent[]): string[] {
  return events.map((e) => e.id);
}
