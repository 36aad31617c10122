import type { Orm } from '../../src/db/orm.js';
import type { EventBus } from '../../src/events/bus.js';
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

export function ids(events: readonly LogEvent[]): string[] {
  return events.map((e) => e.id);
}
