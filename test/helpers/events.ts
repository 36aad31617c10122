import type { Orm } from '../../src/db/orm.js';
import type { EventBus } from '../../src/events/bus.js';
import { appendEvent, type NewEvent } from '../../src/events/log.js';
import { type LogEvent, type LogPosition, logPosition } from '../../src/events/reader.js';

/** Appends events in one transaction the way services do, then wakes the bus after commit; returns their log positions. */
export async function appendCommitted(
  orm: Orm,
  bus: EventBus | null,
  events: NewEvent[],
  now = new Date(),
): Promise<LogPosition[]> {
  const appended = await orm.em.fork().transactional(async (tx) => {
    const out: LogPosition[] = [];
    for (const event of events) {
      const { txId, id } = await appendEvent(tx, event, now);
      out.push(logPosition(txId, id));
    }
    return out;
  });
  bus?.committed();
  return appended;
}

export function positions(events: readonly LogEvent[]): LogPosition[] {
  return events.map((e) => e.position);
}

/** Log order, for sorting what several writers appended. */
export function byPosition(a: LogPosition, b: LogPosition): number {
  return a < b ? -1 : a > b ? 1 : 0;
}
