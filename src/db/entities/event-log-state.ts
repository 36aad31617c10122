import { BigIntType, EntitySchema } from '@mikro-orm/core';

/** The id of the event log's one state row. */
export const EVENT_LOG_STATE_ID = 1;

/**
 * The event log's own bookkeeping, one row: the position (transaction id, event id) up to which
 * the sweeper has pruned, written in the same transaction as each delete. A cursor older than
 * it has lost events; one at or after it has not (src/events/reader.ts resolveCursor).
 */
export class EventLogState {
  id: number = EVENT_LOG_STATE_ID;
  prunedTxId = '0';
  prunedId = '0';
}

export const EventLogStateSchema = new EntitySchema<EventLogState>({
  class: EventLogState,
  tableName: 'event_log_state',
  properties: {
    id: { type: 'integer', primary: true, autoincrement: false },
    prunedTxId: { type: new BigIntType('string'), default: 0 },
    prunedId: { type: new BigIntType('string'), default: 0 },
  },
});
